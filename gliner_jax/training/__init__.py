"""Training: data pipeline, loss, optimizer, sharding, trainer."""
