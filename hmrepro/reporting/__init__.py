"""Reports: the HM paper's tables with the claimed, verified and reproduced numbers side by side.

- :mod:`.claimed` reads the paper's numbers from ``recipes/claimed/tableN.csv``;
- :mod:`.tables` joins a table's rows with the result records (:mod:`hmrepro.engine.records`);
- :mod:`.render` writes the result as rich text, Markdown, CSV or LaTeX.
"""

from .claimed import TABLE_NUMBERS, load_all_claimed, load_claimed
from .render import FORMATS, render
from .tables import TableQuery, compare_table

__all__ = ["FORMATS", "TABLE_NUMBERS", "TableQuery", "compare_table", "load_all_claimed", "load_claimed", "render"]
