"""Training: the loop, its configuration, schedules, DDP and the memory check."""
