"""``hmrepro prepare --check``: is every image and mask that the split lists name on disk, and readable?"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..data.benchmarks import get_benchmark
from ..data.splits import SplitFolder

FETCH_COMMANDS = {
    "pascal": "hmrepro download pascal && hmrepro prepare pascal",
    "coco": "hmrepro download coco && hmrepro prepare coco",
    "fss": "hmrepro download fss && hmrepro prepare fss",
}


@dataclass
class LayoutReport:
    benchmark: str
    data_root: Path
    referenced: int = 0  # files (images + masks) the split lists name
    missing: list[str] = field(default_factory=list)  # posix paths relative to data_root
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    sampled: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def fetch_command(self) -> str:
        return f"{FETCH_COMMANDS[self.benchmark]} (with --data-root {self.data_root})"


class _DirCache:
    """``os.listdir`` once per folder: checking 250k paths by membership is much faster than stat-ing them."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.listings: dict[str, set[str]] = {}

    def exists(self, rel: str) -> bool:
        parent, name = os.path.split(rel)
        listing = self.listings.get(parent)
        if listing is None:
            try:
                listing = set(os.listdir(os.path.join(self.root, parent)))
            except (FileNotFoundError, NotADirectoryError):
                listing = set()
            self.listings[parent] = listing
        return name in listing


def _decodes(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            img.load()
        return None
    except Exception as err:  # PIL raises many types for truncated or foreign files
        return str(err) or type(err).__name__


def check_layout(benchmark: str, data_root: Path, splits: SplitFolder | None = None, *, sample: int = 16) -> LayoutReport:
    """Check the files every split list of ``benchmark`` names below ``data_root``; decode ``sample`` of them."""
    bench = get_benchmark(benchmark)
    data_root = Path(data_root)
    report = LayoutReport(benchmark, data_root)
    cache = _DirCache(data_root)
    present: list[str] = []
    for image, mask in bench.referenced_files(splits or SplitFolder()):
        for rel in (image, mask):
            rel = os.path.normpath(rel).replace(os.sep, "/")
            report.referenced += 1
            (present if cache.exists(rel) else report.missing).append(rel)
    if present and sample > 0:
        step = max(1, len(present) // sample)
        for rel in present[::step][:sample]:
            problem = _decodes(data_root / rel)
            report.sampled += 1
            if problem:
                report.unreadable.append((rel, problem))
    return report
