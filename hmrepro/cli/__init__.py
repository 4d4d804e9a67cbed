"""The ``hmrepro`` command line (Typer + rich). Each command group lives in its own module."""
