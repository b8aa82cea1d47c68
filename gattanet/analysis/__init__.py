"""What the results mean: effect intervals and verdicts, noise sweeps, the query embedding, agreement maps."""
