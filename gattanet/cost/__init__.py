"""What a run costs: work items, measured pass rates, the figures file, and the throughput benchmark."""
