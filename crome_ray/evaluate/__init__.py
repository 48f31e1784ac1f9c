"""Evaluation: RewardBench-style scores, reWordBench-style transformations, reward shift, the report."""
