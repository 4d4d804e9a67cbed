"""Model cards: everything hmrepro knows about a model family, in one place (no torch: listing models stays cheap).

A card says how to build the family's models (module, class, one masking mode per model name), which recipe file
trains them, how they are evaluated (episode protocol, image/mask preprocessing, the authors' image size per
benchmark, whether original-size evaluation is allowed), which checkpoint files they read (formats and the
state-dict key prefixes that identify the family) and which weights their authors published.

Adding a family = one model module under ``hmrepro/models/`` (a :class:`~hmrepro.models.interface.FewShotModule`;
a :class:`~hmrepro.models.kshot.ShotVoteModel` when its K-shot prediction is the authors' vote) + one
:class:`ModelCard` in :data:`CARDS` + one recipe file ``recipes/<card.recipe>.toml`` (training hyper-parameters
only); ``tests/test_model_contract.py`` then checks every model of the card against the interface. The registry
(:mod:`hmrepro.models.registry`), the recipes (:mod:`hmrepro.engine.recipes`), checkpoint reading
(:mod:`hmrepro.engine.checkpoint_io`), the download index (:mod:`hmrepro.acquisition.published_weights`) and the
runtime benchmark (:mod:`hmrepro.engine.benchmarking.bench`) all read the cards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import HmreproError

__all__ = [
    "BENCHMARKS",
    "CARDS",
    "ORIGINAL_SIZE_BENCHMARKS",
    "EvalPlan",
    "ModelCard",
    "ModelCardError",
    "PublishedCheckpoint",
    "card_of",
    "eval_plan",
    "list_cards",
    "model_names",
    "published_checkpoints",
    "published_with_sha256",
]

BENCHMARKS = ("pascal", "coco", "fss")
ORIGINAL_SIZE_BENCHMARKS = ("pascal", "coco")
"""Benchmarks whose authors' loaders can keep the query mask at its original size (FSS-1000's always resize)."""

HM_VARIANTS = {"im": "im", "hm": "hm", "hm-add": "hm-add", "hm-reverse": "hm-reverse"}
"""Name suffix → masking mode of the HM paper's variants, registered for every family (``hsnet-hm``, ...)."""


class ModelCardError(HmreproError, ValueError):
    """An unknown model or a benchmark its family does not cover (also a ValueError, as before the cards)."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One run's weights the authors published: which model, backbone and benchmark (all folds) they serve."""

    model: str
    backbone: str
    benchmark: str
    source: str
    """The key of the download in ``hmrepro/acquisition/sources.toml`` (its primary source; fallbacks live there)."""
    sha256: str | None = None
    """The file's sha256 when the authors published it (none of them do; downloads are pinned in the lock)."""


@dataclass(frozen=True)
class EvalPlan:
    """How a model sees its test episodes: the episode sampler, the image and mask preprocessing, the image side, and
    whether the query masks keep their original size (logits upsampled to it, batch 1, as the authors).

    The one evaluation-plan type: a card gives the authors' plan of a model on a benchmark (:func:`eval_plan`), the
    evaluation adjusts it to its options and checkpoint, and the episode runner runs it.
    """

    protocol: str
    """Episode sampler of :mod:`hmrepro.data.episodes` (``hsnet`` | ``asnet`` | ``bam``)."""
    preprocess: str
    """Image and mask preprocessing of :mod:`hmrepro.data.preprocessing` (``hsnet`` | ``vat`` | ``bam``)."""
    img_size: int
    original_size: bool = False


@dataclass(frozen=True)
class ModelCard:
    """The facts of one model family (see the module docstring)."""

    family: str
    """Family and baseline model name, e.g. ``hsnet``."""
    module: str
    """Module under ``hmrepro.models`` holding the model class."""
    class_name: str
    baseline_masking: str
    """Masking mode of the baseline model (``fm``; ``none`` where the mask acts elsewhere, as ASNet's)."""
    variants: Mapping[str, str]
    """Model name → masking mode, every model of the family (baseline first)."""
    recipe: str
    """Stem of the recipe file under ``recipes/`` that trains every model of the family."""
    protocol: str
    preprocess: str
    img_size: Mapping[str, int]
    """The authors' train and evaluation image side per benchmark; its keys are the benchmarks the family covers."""
    backbones: tuple[str, ...]
    original_size: bool
    """Whether the family can be evaluated at the query's original size (never on FSS-1000, as the authors)."""
    needs_benchmark: bool
    """Whether the builder needs the benchmark (VAT: its decoder's shapes differ per benchmark)."""
    checkpoint_formats: tuple[str, ...]
    """Formats of :func:`hmrepro.engine.checkpoint_io.read_checkpoint` the family's checkpoints come in."""
    key_signature: tuple[str, ...]
    """State-dict key prefixes (no ``module.``) that only this family's checkpoints have."""
    published: tuple[PublishedCheckpoint, ...] = ()
    description: str = ""
    """How the family reads in messages, e.g. ``HSNet / HSNet-HM``."""
    benchmark_probe: str | None = None
    """``module:function`` under ``hmrepro.models`` that tells from a state dict which benchmark it was trained on
    (for families whose parameters differ per benchmark), else None."""

    @property
    def benchmarks(self) -> tuple[str, ...]:
        """The benchmarks the family covers (ASNet: no FSS-1000, the authors have no loader for it)."""
        return tuple(self.img_size)

    def allows_original_size(self, benchmark: str) -> bool:
        """Whether the family can be scored at the query's original size on ``benchmark``."""
        return self.original_size and benchmark in ORIGINAL_SIZE_BENCHMARKS

    def plan(self, model: str, benchmark: str) -> EvalPlan:
        """The authors' :class:`EvalPlan` of ``model`` (one of :attr:`variants`) on ``benchmark``."""
        if benchmark not in self.img_size:
            raise ModelCardError(
                f"{model} is not defined on {benchmark!r} (its authors cover {', '.join(self.benchmarks)}); "
                f"choose one of those benchmarks"
            )
        return EvalPlan(protocol=self.protocol, preprocess=self.preprocess, img_size=self.img_size[benchmark])


def _variants(family: str, baseline: str, **extra: str) -> Mapping[str, str]:
    """``{family: baseline, <extra>..., family-im: im, family-hm: hm, ...}``; extra keys are name suffixes."""
    names = {family: baseline}
    names.update({f"{family}-{suffix}": mode for suffix, mode in extra.items()})
    names.update({f"{family}-{suffix}": mode for suffix, mode in HM_VARIANTS.items()})
    return MappingProxyType(names)


def _published(model: str, source: str, backbones_by_benchmark: Mapping[str, tuple[str, ...]]):
    return tuple(
        PublishedCheckpoint(model, backbone, benchmark, source)
        for benchmark, backbones in backbones_by_benchmark.items()
        for backbone in backbones
    )


R50_R101 = ("resnet50", "resnet101")
ALL_BACKBONES = ("vgg16", "resnet50", "resnet101")

# HSNet (Min et al., ICCV 2021) and HSNet-HM. ``hsnet-nofm`` is HSNet trained and tested without support feature
# masking (the authors' ablation, "line 51 of hsnet.py commented out"), published for PASCAL-5i on ResNet-101.
HSNET = ModelCard(
    family="hsnet",
    module="hsnet",
    class_name="HSNet",
    baseline_masking="fm",
    variants=_variants("hsnet", "fm", nofm="none"),
    recipe="hsnet",
    protocol="hsnet",
    preprocess="hsnet",  # torchvision Resize on PIL, torch nearest masks
    img_size=MappingProxyType({"pascal": 400, "coco": 400, "fss": 400}),
    backbones=ALL_BACKBONES,
    original_size=True,
    needs_benchmark=False,
    checkpoint_formats=("hmrepro", "dataparallel", "bare", "wrapped"),  # the authors': DataParallel state dicts
    key_signature=("hpn_learner.encoder_layer",),
    published=(
        _published("hsnet", "hsnet_pascal", {"pascal": ALL_BACKBONES})
        + _published("hsnet", "hsnet_coco", {"coco": R50_R101})
        + _published("hsnet", "hsnet_fss", {"fss": ALL_BACKBONES})
        + _published("hsnet-nofm", "hsnet_nofm_pascal", {"pascal": ("resnet101",)})
        + _published("hsnet-hm", "hm", {"pascal": R50_R101, "coco": R50_R101, "fss": R50_R101})
    ),
    description="HSNet / HSNet-HM",
)

# VAT (Hong et al., ECCV 2022) and VAT-HM: cv2 preprocessing that resizes every mask (no original-size evaluation),
# the released configs' IMG_SIZE, and a decoder whose shapes depend on the benchmark.
VAT = ModelCard(
    family="vat",
    module="vat",
    class_name="VAT",
    baseline_masking="fm",
    variants=_variants("vat", "fm"),
    recipe="vat",
    protocol="hsnet",  # VAT evaluates on HSNet's episodes
    preprocess="vat",
    img_size=MappingProxyType({"pascal": 473, "coco": 417, "fss": 473}),
    backbones=R50_R101,
    original_size=False,
    needs_benchmark=True,
    checkpoint_formats=("hmrepro", "wrapped", "dataparallel", "bare"),  # the authors': {'state_dict': ...}
    key_signature=("hpn_learner.ours.",),
    published=(
        _published("vat", "vat", {"pascal": R50_R101, "coco": ("resnet50",), "fss": R50_R101})
        + _published("vat-hm", "hm", {"pascal": R50_R101, "coco": ("resnet50",), "fss": R50_R101})
    ),
    description="VAT / VAT-HM",
    benchmark_probe="vat_learner:decoder_benchmark",
)

# ASNet (Kang & Cho, CVPR 2022; FS-S) and ASNet-HM: the baseline masks no support features (its mask only masks
# attention keys), episodes reseeded per index, no FSS-1000 loader. The authors also publish a VGG16 ASNet for
# PASCAL-5i; hmrepro's ASNet is ResNet only (the HM paper reports R50/R101), so that file is not indexed.
ASNET = ModelCard(
    family="asnet",
    module="asnet",
    class_name="ASNet",
    baseline_masking="none",
    variants=_variants("asnet", "none"),
    recipe="asnet",
    protocol="asnet",
    preprocess="hsnet",
    img_size=MappingProxyType({"pascal": 400, "coco": 400}),
    backbones=R50_R101,
    original_size=True,
    needs_benchmark=False,
    checkpoint_formats=("hmrepro", "lightning"),  # the authors': PyTorch-Lightning .ckpt
    key_signature=("learner.",),
    published=(
        _published("asnet", "asnet", {"pascal": R50_R101, "coco": R50_R101})
        + _published("asnet-hm", "hm", {"coco": R50_R101})
    ),
    description="ASNet / ASNet-HM",
)

# CRCNet (Liu et al., IJCV 2022), reconstructed from the paper (no public code; ../shared/specs/crcnet.md). Like
# ASNet, the baseline masks no support features (its mask acts in masked average pooling and the local attention);
# the HM variants replace the features those read. Episodes: the paper's cannot be recovered (CaNet draws them with
# unseeded Python `random`), so CRCNet evaluates on HSNet's episodes (NumPy seed 0, 1000 per fold; FSS-1000 one per
# test image) — the same episodes as the HM models, like for like [G23]. 321 px (the paper's training size); PIL
# bilinear resize as HSNet (and CaNet). COCO-20i: the paper has no plain-CRCNet number; the recipe's COCO section is
# ours. No published weights.
CRCNET = ModelCard(
    family="crcnet",
    module="crcnet",
    class_name="CRCNet",
    baseline_masking="none",
    variants=_variants("crcnet", "none"),
    recipe="crcnet",
    protocol="hsnet",
    preprocess="hsnet",
    img_size=MappingProxyType({"pascal": 321, "coco": 321, "fss": 321}),
    backbones=R50_R101,
    original_size=True,
    needs_benchmark=False,
    checkpoint_formats=("hmrepro",),
    key_signature=("refine.project.",),
    description="CRCNet / CRCNet-HM",
)

# MCE (Xu et al., arXiv 2308.11201), reconstructed from the paper (no public code; ../shared/specs/mce.md): BAM's
# meta-learner plus a masked cross-image encoder. The baseline's mask acts inside the model (PFENet's layer-4 masking,
# the prior, the prototype, the attention masks), so its mode is `none`; HM replaces the support backbone features.
# Evaluates with BAM's protocol (5 seeds x 1000 episodes, aspect-kept resize on a 473 canvas, scored at the original
# label); `--protocol hsnet` gives the HM models' episodes. vgg16 = torchvision vgg16_bn (PFENet/BAM). No MCE weights.
# Its frozen encoder defaults to BAM's (the model argument encoder=pspnet: the fold's PSPNet base learner, `hmrepro
# train pspnet` or BAM's published `bam_pspnet`); encoder=imagenet is a deviation.
MCE = ModelCard(
    family="mce",
    module="mce",
    class_name="MCE",
    baseline_masking="none",
    variants=_variants("mce", "none"),
    recipe="mce",
    protocol="bam",
    preprocess="bam",
    img_size=MappingProxyType({"pascal": 473, "coco": 473}),
    backbones=ALL_BACKBONES,
    original_size=False,
    needs_benchmark=False,
    checkpoint_formats=("hmrepro",),
    key_signature=("cross_fusion.", "encoders."),
    description="MCE / MCE-HM",
)

CARDS: tuple[ModelCard, ...] = (HSNET, VAT, ASNET, CRCNET, MCE)


def list_cards() -> list[ModelCard]:
    """Every model family's card, in registration order."""
    return list(CARDS)


def model_names() -> list[str]:
    """Every model of every card, sorted."""
    return sorted(name for card in CARDS for name in card.variants)


def card_of(model_name: str) -> ModelCard:
    """The card of the family ``model_name`` belongs to (``hsnet-hm`` → the HSNet card)."""
    for card in CARDS:
        if model_name in card.variants:
            return card
    raise ModelCardError(f"unknown model {model_name!r}; choose one of {', '.join(model_names())}")


def eval_plan(model_name: str, benchmark: str) -> EvalPlan:
    """How ``model_name`` is evaluated on ``benchmark`` (episodes, preprocessing, image size, original size)."""
    return card_of(model_name).plan(model_name, benchmark)


def published_checkpoints(model_name: str | None = None) -> list[PublishedCheckpoint]:
    """The authors' published weights, of every card or only of ``model_name``."""
    every = [p for card in CARDS for p in card.published]
    return [p for p in every if model_name is None or p.model == model_name]


def published_with_sha256(sha256: str) -> PublishedCheckpoint | None:
    """The published checkpoint whose known sha256 is ``sha256``, else None."""
    return next((p for p in published_checkpoints() if p.sha256 and p.sha256 == sha256), None)
