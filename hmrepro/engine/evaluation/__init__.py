"""Evaluation: the episode runner, metrics, inference options and per-episode files."""
