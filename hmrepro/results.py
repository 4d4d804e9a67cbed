"""Result records as data: ``hmrepro.results.load(results_dir)`` is a pandas DataFrame, one row per record.

The public face of :mod:`hmrepro.reporting.results` (its ``COLUMNS`` and how a record's cell is decided).

Example::

    from hmrepro.results import load

    frame = load("results")
    frame.query('model == "hsnet-hm" and fills_cell')[["benchmark", "fold", "shot", "miou"]]
"""

from __future__ import annotations

from .reporting.results import COLUMNS, load, records_frame

__all__ = ["COLUMNS", "load", "records_frame"]
