"""The papers whose claimed numbers hmrepro holds (``hmrepro table N --paper X``): their tables and where the CSVs live.

Kept free of pandas and torch so that the command line refuses an unknown table at once. A paper's table numbers
are its own: the HM paper's Tables 1–7, CRCNet's (IJCV 2022) Tables 1–15 without Table 10 (the class split of
PASCAL-5i, no results), MCE's (arXiv 2308.11201) Tables I–IV, written 1–4. The HM paper's CSVs sit directly in
``recipes/claimed/``; every other paper's in ``recipes/claimed/<paper>/`` (``recipes/claimed/README.md``).

``source`` in a paper's CSV is the paper's key for the rows its authors ran (``hm``, ``crcnet``, ``mce``) or
``quoted`` for numbers the paper copies from others; only the former take hmrepro's result records.
``record_kinds`` names the tables filled by records other than evaluations (the HM paper's Table 4: domain shift,
Table 7: timing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import HmreproError

__all__ = ["PAPERS", "Paper", "get_paper"]

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX", 10: "X"}


@dataclass(frozen=True)
class Paper:
    """One paper: its key, the label of the rows its authors ran, its tables (number → caption), where its CSVs are."""

    key: str
    title: str
    label: str  # the Source cell of the rows the paper's authors ran
    captions: Mapping[int, str]
    folder: str = ""  # below recipes/claimed/
    roman: bool = False  # the paper numbers its tables I, II, ...
    record_kinds: Mapping[int, str] = field(default_factory=dict)  # table → record kind other than 'eval'

    @property
    def tables(self) -> tuple[int, ...]:
        return tuple(sorted(self.captions))

    @property
    def sources(self) -> tuple[str, str]:
        return (self.key, "quoted")

    def table_label(self, number: int) -> str:
        """How the paper names the table: ``Table 2``, ``Table II``."""
        return f"Table {ROMAN[number] if self.roman else number}"

    def record_kind(self, number: int) -> str:
        return self.record_kinds.get(number, "eval")

    def check_table(self, number: int) -> int:
        if number not in self.captions:
            raise HmreproError(
                f"the {self.key} paper has no table {number} with results; choose one of "
                f"{', '.join(map(str, self.tables))}"
            )
        return number


HM = Paper(
    key="hm",
    title="HM: Hybrid Masking for Few-Shot Segmentation (ECCV 2022)",
    label="HM",
    captions={
        1: "PASCAL-5i: mIoU per fold, mean mIoU and FB-IoU",
        2: "COCO-20i: mIoU per fold, mean mIoU and FB-IoU",
        3: "FSS-1000: mean mIoU",
        4: "Domain shift: trained on COCO-20i, tested on PASCAL-5i (mIoU)",
        5: "Ablation of the masking (FM / IM / HM in HSNet) on COCO-20i",
        6: "Ablation of the merging of FM and IM features on COCO-20i, 1-shot",
        7: "Inference time on COCO-20i (seconds per image)",
    },
    record_kinds={4: "domain-shift", 7: "bench"},
)

CRCNET = Paper(
    key="crcnet",
    title="CRCNet: Few-shot Segmentation with Cross-Reference and Region-Global Conditional Networks (IJCV 2022)",
    label="CRCNet",
    folder="crcnet",
    captions={
        1: "Ablation of the conditional and cross-reference modules, PASCAL-5i (mIoU)",
        2: "Ablation of multi-level features, multi-scale input and mask refinement, PASCAL-5i (mIoU)",
        3: "Ablation of the global and local conditional modules, PASCAL-5i (mIoU)",
        4: "k-shot: fine-tuning vs fusion, PASCAL-5i (mIoU)",
        5: "The fine-tuning scheme on PFENet, PASCAL-5i 5-shot (mIoU)",
        6: "Ablation of the gate's Sigmoid activation, PASCAL-5i 1-shot (mIoU)",
        7: "Ablation of the support mask in the local conditional module, PASCAL-5i 1-shot (mIoU)",
        8: "PASCAL-5i: mIoU per fold, 1-shot and 5-shot",
        9: "PASCAL-5i: FB-IoU, 1-shot and 5-shot",
        11: "COCO-20i: FB-IoU, 1-shot and 5-shot",
        12: "COCO-20i: mIoU per fold, 1-shot and 5-shot",
        13: "COCO (CaNet's 40/20/20 class split): mIoU, with the module ablation",
        14: "Weakly supervised few-shot segmentation, PASCAL-5i and FSS-1000 (mIoU)",
        15: "FSS-1000: mIoU, 1-shot and 5-shot",
    },
)

MCE = Paper(
    key="mce",
    title="MCE: Masked Cross-image Encoding for Few-shot Segmentation (arXiv 2308.11201)",
    label="MCE",
    folder="mce",
    roman=True,
    captions={
        1: "PASCAL-5i: mIoU per fold, 1-shot and 5-shot",
        2: "COCO-20i: mIoU per fold, 1-shot and 5-shot",
        3: "Which output map of the masked cross-image encoder to use, PASCAL-5i 1-shot, ResNet-50 (mIoU)",
        4: "Ablation of the modules (cross map, similarity matrix, multi-level), PASCAL-5i 1-shot, ResNet-50 (mIoU)",
    },
)

PAPERS: dict[str, Paper] = {p.key: p for p in (HM, CRCNET, MCE)}


def get_paper(key: str) -> Paper:
    try:
        return PAPERS[key]
    except KeyError:
        raise HmreproError(f"unknown paper {key!r}; choose one of {', '.join(PAPERS)}") from None
