"""Reward-model training: the composite loss, model loading, pair batches, the Ray Train
loop, export and scoring."""
