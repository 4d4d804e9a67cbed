"""``hmrepro prepare --check``: is every image and mask the split lists name on disk, readable and valid?"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..data.benchmarks import Benchmark, check_mask_size, get_benchmark, load_image, open_image
from ..data.splits import SplitFolder
from ..errors import HmreproError, InvalidInputError
from ..progress import Progress, Silent

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
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, problem): undecodable or invalid
    sampled: int = 0  # files decoded and validated

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def fetch_command(self) -> str:
        return f"{FETCH_COMMANDS[self.benchmark]} (with --data-root {shlex.quote(str(self.data_root))})"


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


def _check_pair(bench: Benchmark, data_root: Path, image_rel: str, mask_rel: str) -> list[tuple[str, str]]:
    """Decode one image and its mask the way the readers do: [(relative path, problem)], empty when both are fine.

    The mask is validated as on read (kind, bit depth, values that are classes) and against its image's size.
    """
    problems: list[tuple[str, str]] = []
    image = None
    try:
        image = load_image(data_root / image_rel, bench.name)
    except HmreproError as err:
        problems.append((image_rel, str(err)))
    mask_path = data_root / mask_rel
    try:
        with open_image(mask_path, bench.name) as img:
            arr = bench.decode_mask(img, mask_path, data_root)
        if image is not None:
            check_mask_size(mask_path, arr.shape, image, bench.name, data_root)
    except HmreproError as err:
        problems.append((mask_rel, str(err)))
    return problems


def _sample(pairs: list, sample: int) -> list:
    step = max(1, len(pairs) // sample)
    return pairs[::step][:sample]


def check_layout(
    benchmark: str,
    data_root: Path,
    splits: SplitFolder | None = None,
    *,
    sample: int = 16,
    full: bool = False,
    progress: Progress | None = None,
) -> LayoutReport:
    """Check the files every split list of ``benchmark`` names below ``data_root``.

    Every named file must exist; then ``sample`` (image, mask) pairs spread over the lists are decoded and
    validated (mask kind, values, size against the image), or every pair with ``full=True``. ``progress``
    (see :mod:`hmrepro.progress`) hears about the decoding; nothing here prints.
    """
    bench = get_benchmark(benchmark)
    data_root = Path(data_root)
    if data_root.exists() and not data_root.is_dir():
        raise InvalidInputError(f"data root {data_root} is a file, not a folder; pass --data-root DIR")
    report = LayoutReport(benchmark, data_root)
    cache = _DirCache(data_root)
    pairs: list[tuple[str, str]] = []
    for image, mask in bench.referenced_files(splits or SplitFolder()):
        rels = [os.path.normpath(rel).replace(os.sep, "/") for rel in (image, mask)]
        report.referenced += 2
        missing = [rel for rel in rels if not cache.exists(rel)]
        report.missing.extend(missing)
        if not missing:
            pairs.append((rels[0], rels[1]))
    todo = pairs if full else (_sample(pairs, sample) if sample > 0 else [])
    progress = progress or Silent()
    task = progress.start(f"decoding {len(todo)} image/mask pairs", total=len(todo))
    for image_rel, mask_rel in todo:
        report.unreadable.extend(_check_pair(bench, data_root, image_rel, mask_rel))
        report.sampled += 2
        progress.advance(task)
    progress.finish(task)
    return report
