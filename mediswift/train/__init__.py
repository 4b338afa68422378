"""Pre-training: batches, optimizer and schedule, checkpoints, the loop."""
