"""Benchmarks, split lists, episodes and preprocessing."""
