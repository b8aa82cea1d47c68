"""Running models: the training loop, evaluation (shared first passes), checkpoints, devices, precision and data parallelism."""
