"""Training, evaluation, metrics and checkpoints."""
