"""Benchmarks: LocalPG against SB3's back-propagated PPO / A2C, and the estimator / baseline ablation."""
