"""Benchmarks: timing the model, an evaluation and a training iteration."""
