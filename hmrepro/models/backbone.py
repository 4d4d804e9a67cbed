"""Frozen ImageNet backbones and the intermediate features ("taps") HSNet correlates.

Matches the authors' HSNet (``model/base/feature.py`` and ``model/hsnet.py``):

- ResNet-50 / ResNet-101: the stem and layer1 run as usual; for every bottleneck of layer2..layer4 the tap is
  ``bn3(conv3(...)) + shortcut`` *before* the block's final ReLU (13 taps for R50, 30 for R101).
- VGG-16: the outputs of ``features`` modules 17, 19, 21 (conv, pre-ReLU), 24, 26, 28 (conv, pre-ReLU) and
  30 (the last max-pool).
- Taps are grouped into three stages, deepest first: R50 (3, 6, 4), R101 (3, 23, 4), VGG-16 (1, 3, 3).
- VAT taps one block earlier (its tap list starts at bottleneck 3 instead of 4): with ``tap_layer1=True`` a
  ResNet also returns layer1's last bottleneck (before its ReLU, 256 channels) as the *first* tap.
  ``stage_tap_counts`` still counts only the layer2..layer4 taps (those VAT correlates); the extra tap is
  reported by ``extra_shallow_taps`` (1, else 0).

The backbone adopts the torchvision network's child modules under their torchvision names, so that inside a
model stored as ``self.backbone`` the ``state_dict`` keys are exactly the authors' (``backbone.conv1.weight``,
``backbone.layer1.0.bn1.running_mean``, ``backbone.fc.weight`` ... — the unused classifier is kept because the
authors' checkpoints contain it).

The backbone is frozen (``requires_grad=False``) and always in eval mode: :meth:`FrozenBackbone.train` ignores
its argument, so a training step never updates BatchNorm running statistics. The authors achieve the same with
an explicit ``train_mode()`` that calls ``backbone.eval()`` after ``train()``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..errors import CorruptFileError, MissingDataError

__all__ = [
    "BACKBONES",
    "BackboneWeightsMissingError",
    "DeepStemResNet",
    "FrozenBackbone",
    "FrozenDilatedResNet",
    "FrozenResNet",
    "FrozenStagedDeepResNet",
    "FrozenStagedVGG16BN",
    "FrozenVGG16",
    "build_backbone",
    "build_deep_stem_backbone",
    "build_dilated_backbone",
    "build_dilated_resnet",
    "imagenet_weights_path",
    "load_imagenet_state_dict",
]


class BackboneWeightsMissingError(MissingDataError):
    """The ImageNet weights file of a backbone is not in torch's hub cache and could not be downloaded."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its ImageNet weights come from."""

    build: Callable[[], nn.Module]
    weights_url: str
    legacy_filenames: tuple[str, ...]
    """Older torchvision file names holding the same tensors (the authors' torchvision <= 0.9 downloads)."""


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(
        build=lambda: torchvision.models.resnet50(weights=None),
        weights_url=torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url,
        legacy_filenames=("resnet50-19c8e357.pth",),
    ),
    "resnet101": BackboneSpec(
        build=lambda: torchvision.models.resnet101(weights=None),
        weights_url=torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url,
        legacy_filenames=("resnet101-5d3b4d8f.pth",),
    ),
    "vgg16": BackboneSpec(
        build=lambda: torchvision.models.vgg16(weights=None),
        weights_url=torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
        legacy_filenames=(),
    ),
    "vgg16_bn": BackboneSpec(  # PFENet / BAM / MCE / CRCNet: VGG-16 with BatchNorm
        build=lambda: torchvision.models.vgg16_bn(weights=None),
        weights_url=torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1.url,
        legacy_filenames=(),
    ),
}


# ---------------------------------------------------------------------------------------------------------------
# ImageNet weights
# ---------------------------------------------------------------------------------------------------------------


def hub_checkpoint_dir() -> Path:
    """The folder torchvision caches downloaded weights in: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights_path(name: str) -> Path:
    """Where the ``IMAGENET1K_V1`` weights file of backbone ``name`` lives in torch's hub cache."""
    return hub_checkpoint_dir() / os.path.basename(_spec(name).weights_url)


def _download(url: str, path: Path) -> None:
    """Download ``url`` to ``path``, checking the SHA-256 prefix in the file name like torch.hub does."""
    match = re.search(r"-([a-f0-9]+)\.", os.path.basename(url))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=False)


def read_weights_file(path: Path, what: str, advice: str = "") -> object:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``; a file that cannot be read raises
    :class:`CorruptFileError` naming ``what`` (e.g. ``ImageNet weights``), followed by ``advice`` when given."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CorruptFileError(f"cannot read {what} {path} ({type(err).__name__}: {err}){advice}") from err


def load_imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """The torchvision ``IMAGENET1K_V1`` state dict of backbone ``name`` (from the hub cache, else downloaded).

    Raises :class:`BackboneWeightsMissingError` naming the file and the folder to put it in when the file is not
    cached and cannot be downloaded (e.g. no internet), and :class:`~hmrepro.errors.CorruptFileError` when a
    cached file cannot be read.
    """
    spec = _spec(name)
    path = imagenet_weights_path(name)
    if not path.is_file():
        legacy = [hub_checkpoint_dir() / f for f in spec.legacy_filenames if (hub_checkpoint_dir() / f).is_file()]
        if legacy:
            path = legacy[0]
        else:
            try:
                _download(spec.weights_url, path)
            except Exception as err:  # no network, proxy, hash mismatch ...: all mean "put the file there yourself"
                raise BackboneWeightsMissingError(
                    f"ImageNet weights for {name} not found: {path.name} is not in {path.parent} and downloading "
                    f"{spec.weights_url} failed ({type(err).__name__}: {err}). Download that file on a machine "
                    f"with internet access and copy it to {path.parent}/ (torch.hub.get_dir()/checkpoints; set "
                    f"TORCH_HOME to move it), or build the model with pretrained=False."
                ) from err
    return read_weights_file(path, "ImageNet weights", f"; delete the file and download {spec.weights_url} again")


def _spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


# ---------------------------------------------------------------------------------------------------------------
# Frozen backbones with taps
# ---------------------------------------------------------------------------------------------------------------


class FrozenBackbone(nn.Module):
    """A torchvision network whose children are adopted under their own names, frozen and always in eval mode."""

    stage_tap_counts: tuple[int, int, int]
    """Number of taps per stage, deepest stage first (the order of HSNet's correlation pyramid)."""
    extra_shallow_taps: int = 0
    """Taps before the first stage (VAT's layer1 tap), returned first by :meth:`taps`; not in the stage counts."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        for child_name, child in net.named_children():
            self.add_module(child_name, child)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenBackbone:
        """Stay in eval mode whatever ``mode`` is, so BatchNorm always uses (and never updates) running stats."""
        return super().train(False)

    def taps(self, img: Tensor) -> list[Tensor]:
        """The tapped features of a batch of normalised images, shallowest first."""
        raise NotImplementedError

    def calibration_pass(self, img: Tensor) -> None:
        """Run every layer the model runs on ``img`` (the BatchNorm re-estimation of a random backbone): the taps."""
        self.taps(img)


class FrozenResNet(FrozenBackbone):
    """ResNet taps: every bottleneck of layer2..layer4, after the residual sum and before the final ReLU.

    ``tap_layer1=True`` (VAT) prepends the tap of layer1's last bottleneck.

    Inference with folded BatchNorm (:meth:`set_batchnorm_folding`, off by default; HSNet and ASNet turn it on in
    eval mode): every convolution and the eval-mode BatchNorm after it run as one convolution with derived weights
    (:class:`FoldedResNet`), ~15 % less CPU time at 400 px; the taps are the same up to float rounding (~4e-6
    relative). The derived weights are a cache beside the module, never in its ``state_dict``, rebuilt when any
    parameter or buffer changes (``load_state_dict``, ``.to()``); a BatchNorm in training mode (the re-estimation
    of a random backbone) always runs the unfolded layers.
    """

    def __init__(self, net: torchvision.models.ResNet, tap_layer1: bool = False) -> None:
        super().__init__(net)
        self.stage_tap_counts = (len(self.layer4), len(self.layer3), len(self.layer2))
        self.extra_shallow_taps = 1 if tap_layer1 else 0
        self.fold_batchnorm = False
        self._folded: tuple[tuple, FoldedResNet] | None = None  # (weights' identity, derived layers)

    def set_batchnorm_folding(self, enabled: bool) -> None:
        """Run :meth:`taps` with BatchNorm folded into the convolutions (built now) or as the torchvision layers
        (the cache is dropped)."""
        self.fold_batchnorm = enabled
        self._folded = None
        if enabled:
            self.folded_layers()

    def folded_layers(self) -> FoldedResNet:
        """The cached :class:`FoldedResNet` of the current weights, rebuilt if any tensor changed since."""
        key = _weights_identity(self)
        if self._folded is None or self._folded[0] != key:
            self._folded = None  # the old copy is freed before the new one is built
            self._folded = (key, FoldedResNet.of(self))
        return self._folded[1]

    def _folding_applies(self) -> bool:
        return self.fold_batchnorm and not any(
            m.training for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        )

    def taps(self, img: Tensor) -> list[Tensor]:
        if self._folding_applies():
            return self.folded_layers().taps(img, self.extra_shallow_taps)
        feat = self.maxpool(self.relu(self.bn1(self.conv1(img))))
        taps = []
        if self.extra_shallow_taps:
            for block in self.layer1[:-1]:
                feat = block(feat)
            tap = _bottleneck_before_relu(self.layer1[-1], feat)
            taps.append(tap)
            feat = F.relu(tap)
        else:
            feat = self.layer1(feat)  # layer1's taps (1..3) are not used by HSNet
        for layer in (self.layer2, self.layer3, self.layer4):
            for block in layer:
                tap = _bottleneck_before_relu(block, feat)
                taps.append(tap)
                feat = F.relu(tap)  # not in place: the tap keeps its negative values
        return taps


def _bottleneck_before_relu(block: torchvision.models.resnet.Bottleneck, x: Tensor) -> Tensor:
    """A torchvision bottleneck's output before its final ReLU: bn3(conv3(...)) + shortcut."""
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    shortcut = x if block.downsample is None else block.downsample(x)
    return out + shortcut


def _weights_identity(module: nn.Module) -> tuple:
    """Storage and version counter of every parameter and buffer: changes whenever one of them is written or
    replaced (``load_state_dict``'s in-place copies, ``.to()``)."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*module.parameters(), *module.buffers()))


@dataclass(frozen=True)
class FoldedConv:
    """A convolution followed by an eval-mode BatchNorm, as one convolution (derived weights, no autograd)."""

    weight: Tensor
    bias: Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @classmethod
    def of(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> FoldedConv:
        """weight × γ/√(σ² + ε) per output channel and bias β − μ·γ/√(σ² + ε), computed in float64, stored in the
        conv weight's dtype and memory format."""
        with torch.no_grad():
            scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
            layout = torch.channels_last if conv.weight.is_contiguous(memory_format=torch.channels_last) else None
            weight = (conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
            weight = weight.contiguous(memory_format=layout or torch.contiguous_format)
            bias = (bn.bias.double() - bn.running_mean.double() * scale).to(conv.weight.dtype)
        return cls(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def __call__(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


@dataclass(frozen=True)
class FoldedBottleneck:
    """A torchvision bottleneck with folded BatchNorm; returns its output before the final ReLU."""

    conv1: FoldedConv
    conv2: FoldedConv
    conv3: FoldedConv
    downsample: FoldedConv | None

    @classmethod
    def of(cls, block: torchvision.models.resnet.Bottleneck) -> FoldedBottleneck:
        down = block.downsample
        return cls(
            FoldedConv.of(block.conv1, block.bn1),
            FoldedConv.of(block.conv2, block.bn2),
            FoldedConv.of(block.conv3, block.bn3),
            None if down is None else FoldedConv.of(down[0], down[1]),
        )

    def __call__(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x), inplace=True)
        out = F.relu(self.conv2(out), inplace=True)
        return self.conv3(out).add_(x if self.downsample is None else self.downsample(x))


@dataclass(frozen=True)
class FoldedResNet:
    """The stem and the four layers of a :class:`FrozenResNet` with folded BatchNorm (inference only)."""

    stem: FoldedConv
    layers: tuple[tuple[FoldedBottleneck, ...], ...]
    maxpool: nn.Module

    @classmethod
    def of(cls, net: FrozenResNet) -> FoldedResNet:
        layers = tuple(
            tuple(FoldedBottleneck.of(b) for b in layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
        )
        return cls(FoldedConv.of(net.conv1, net.bn1), layers, net.maxpool)

    def taps(self, img: Tensor, extra_shallow_taps: int) -> list[Tensor]:
        """:meth:`FrozenResNet.taps`: layer2..layer4's taps (and layer1's last with ``extra_shallow_taps``)."""
        feat = self.maxpool(F.relu(self.stem(img), inplace=True))
        taps = []
        for index, layer in enumerate(self.layers):
            for position, block in enumerate(layer):
                out = block(feat)
                if index > 0 or (extra_shallow_taps and position == len(layer) - 1):
                    taps.append(out)
                    feat = F.relu(out)  # not in place: the tap keeps its negative values
                else:
                    feat = F.relu(out, inplace=True)
        return taps


class FrozenVGG16(FrozenBackbone):
    """VGG-16 taps: the outputs of ``features`` modules 17, 19, 21, 24, 26, 28 (pre-ReLU convs) and 30 (pool)."""

    TAP_IDS = (17, 19, 21, 24, 26, 28, 30)

    def __init__(self, net: torchvision.models.VGG) -> None:
        super().__init__(net)
        self.stage_tap_counts = (1, 3, 3)
        self.extra_shallow_taps = 0

    def taps(self, img: Tensor) -> list[Tensor]:
        feat, taps = img, []
        for idx, module in enumerate(self.features[: max(self.TAP_IDS) + 1]):
            # torchvision's ReLUs are in place; applying them out of place keeps the pre-ReLU taps intact.
            feat = F.relu(feat) if isinstance(module, nn.ReLU) else module(feat)
            if idx in self.TAP_IDS:
                taps.append(feat)
        return taps


def build_backbone(name: str = "resnet50", pretrained: bool = True, tap_layer1: bool = False) -> FrozenBackbone:
    """A frozen ``resnet50``, ``resnet101`` or ``vgg16``; ``pretrained`` loads torchvision's IMAGENET1K_V1.

    ``tap_layer1`` (ResNets only) also taps layer1's last bottleneck, as VAT does.
    """
    spec = _spec(name)
    if tap_layer1 and name == "vgg16":
        raise ValueError("tap_layer1 needs a ResNet backbone (VAT's VGG-16 branch does not work in the authors' code)")
    net = spec.build()
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(name), strict=True)
    return FrozenVGG16(net) if name == "vgg16" else FrozenResNet(net, tap_layer1=tap_layer1)


# ---------------------------------------------------------------------------------------------------------------
# Dilated ResNet (DeepLab / CaNet / PFENet style): whole-layer outputs at 1/8 of the input
# ---------------------------------------------------------------------------------------------------------------

RESNET_LAYER_CHANNELS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
"""Output channels of each torchvision ResNet-50/101 layer."""


def dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Give every block of a torchvision ResNet ``layer`` stride 1 and ``dilation`` (padding ``dilation``) in its
    3×3 conv, and its downsample stride 1: *all* blocks are dilated, as CaNet/PFENet do (torchvision's
    ``replace_stride_with_dilation`` leaves the first block of a layer at the previous dilation)."""
    for block in layer:
        block.conv2.stride, block.conv2.dilation, block.conv2.padding = (
            (1, 1),
            (dilation, dilation),
            (dilation, dilation),
        )
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class FrozenDilatedResNet(FrozenBackbone):
    """A frozen ResNet whose layer3 (dilation 2) and layer4 (dilation 4) keep the 1/8 resolution of layer2;
    :meth:`taps` returns the post-ReLU outputs of ``feature_layers`` (e.g. ``("layer2", "layer3")``), in order.

    Layers after the last feature layer are kept (their weights stay in the state dict) but never run."""

    LAYERS = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, net: torchvision.models.ResNet, feature_layers: tuple[str, ...] = ("layer2", "layer3")) -> None:
        unknown = [name for name in feature_layers if name not in self.LAYERS]
        if unknown or not feature_layers:
            raise ValueError(f"feature_layers must be names among {self.LAYERS}, not {tuple(feature_layers)}")
        super().__init__(net)
        dilate_layer(self.layer3, 2)
        dilate_layer(self.layer4, 4)
        self.feature_layers = tuple(sorted(feature_layers, key=self.LAYERS.index))
        self.channels = tuple(RESNET_LAYER_CHANNELS[name] for name in self.feature_layers)
        self.stage_tap_counts = (0, 0, 0)  # no HSNet-style correlation stages

    def stem(self, img: Tensor) -> Tensor:
        """The layers before layer1 (conv1, bn1, ReLU, max-pool)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(img))))

    def taps(self, img: Tensor) -> list[Tensor]:
        feat = self.stem(img)
        out = []
        for name in self.LAYERS[: self.LAYERS.index(self.feature_layers[-1]) + 1]:
            feat = getattr(self, name)(feat)
            if name in self.feature_layers:
                out.append(feat)
        return out


def build_dilated_resnet(
    name: str = "resnet50", pretrained: bool = True, feature_layers: tuple[str, ...] = ("layer2", "layer3")
) -> FrozenDilatedResNet:
    """A frozen dilated ``resnet50``/``resnet101`` (torchvision v1.5 layout, IMAGENET1K_V1 weights when
    ``pretrained``) giving the outputs of ``feature_layers`` at 1/8 of the input (CRCNet's Siamese encoder)."""
    if name not in ("resnet50", "resnet101"):
        raise ValueError(f"the dilated backbone needs resnet50 or resnet101, not {name!r}")
    net = _spec(name).build()
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(name), strict=True)
    return FrozenDilatedResNet(net, feature_layers)


# ---------------------------------------------------------------------------------------------------------------
# Dilated stage backbones (PFENet lineage: PFENet, BAM, CRCNet, MCE)
# ---------------------------------------------------------------------------------------------------------------


class FrozenStagedVGG16BN(FrozenBackbone):
    """torchvision ``vgg16_bn``'s ``features`` (no classifier) cut into PFENet's stages.

    The stages are ``features`` 0-6, 7-13, 14-23, 24-33, 34-42; the last max-pool is dropped. :meth:`mid` gives
    (layer2, layer3) with layer2 resized (bilinear, align_corners=True) to layer3's size,
    as PFENet does, so every stage has the same spatial size."""

    feature_layers = ("layer2", "layer3")

    STAGES = ((0, 7), (7, 14), (14, 24), (24, 34), (34, 43))

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net)
        self.channels = (256, 512, 512)

    def _run(self, feat: Tensor, stage: int) -> Tensor:
        start, stop = self.STAGES[stage]
        for module in self.features[start:stop]:
            feat = module(feat)
        return feat

    def taps(self, img: Tensor) -> list[Tensor]:
        """[layer2, layer3] (layer2 resized to layer3's size), like ``FrozenDilatedResNet(feature_layers=
        ("layer2", "layer3"))``; :meth:`layer4` runs the last stage on (a masked) layer3."""
        feat = self._run(self._run(img, 0), 1)
        layer2 = self._run(feat, 2)
        layer3 = self._run(layer2, 3)
        layer2 = F.interpolate(layer2, layer3.shape[-2:], mode="bilinear", align_corners=True)
        return [layer2, layer3]

    def layer4(self, feat: Tensor) -> Tensor:
        return self._run(feat, 4)

    def calibration_pass(self, img: Tensor) -> None:
        """The taps and the last stage, which the PFENet-lineage models run on (masked) layer3 outside :meth:`taps`."""
        self.layer4(self.taps(img)[-1])


class FrozenStagedResNet(FrozenDilatedResNet):
    """The dilated ResNet of the PFENet lineage's MCE: :meth:`taps` = [layer2, layer3], and the model runs ``layer4``
    itself on (a masked) layer3, so layer4 belongs to the BatchNorm re-estimation of a random backbone too."""

    def __init__(self, net: torchvision.models.ResNet) -> None:
        super().__init__(net, feature_layers=("layer2", "layer3"))

    def calibration_pass(self, img: Tensor) -> None:
        self.layer4(self.taps(img)[-1])


def build_dilated_backbone(name: str = "resnet50", pretrained: bool = True) -> FrozenBackbone:
    """A frozen stage backbone of the PFENet lineage whose ``taps`` are [layer2, layer3] and whose ``layer4`` runs
    the last stage: dilated ``resnet50`` / ``resnet101`` (output stride 8, :class:`FrozenDilatedResNet`), or
    ``vgg16`` meaning torchvision's ``vgg16_bn`` (what PFENet and BAM use); ImageNet ``IMAGENET1K_V1`` weights."""
    weights = "vgg16_bn" if name == "vgg16" else name
    if weights not in ("resnet50", "resnet101", "vgg16_bn"):
        raise ValueError(f"unknown backbone {name!r}; choose one of resnet50, resnet101, vgg16")
    if weights == "vgg16_bn":
        return FrozenStagedVGG16BN(_vgg16_bn_features(pretrained))
    net = _spec(weights).build()
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(weights), strict=True)
    return FrozenStagedResNet(net)


def _vgg16_bn_features(pretrained: bool) -> nn.Module:
    """torchvision ``vgg16_bn`` without the classifier, which the PFENet lineage never runs (building its 120 M
    parameters costs seconds): ``features`` initialised as torchvision's VGG does, or IMAGENET1K_V1's ``features.*``."""
    net = nn.Module()
    net.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
    if pretrained:
        state = load_imagenet_state_dict("vgg16_bn")
        net.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=True)
        return net
    for module in net.features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return net


# ---------------------------------------------------------------------------------------------------------------
# Deep-stem ResNet of the PSPNet lineage (semseg, PFENet, BAM: "resnet50 v2"), the encoder of BAM's base learner
# ---------------------------------------------------------------------------------------------------------------

DEEP_STEM_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
DEEP_STEM_IMAGENET_FILES = {"resnet50": "resnet50_v2.pth", "resnet101": "resnet101_v2.pth"}
"""File names of the lineage's ImageNet deep-stem weights (BAM's ``initmodel/``; semseg's ``resnet50_v2.pth``)."""


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class DeepStemResNet(torchvision.models.ResNet):
    """ResNet-50/101 with the deep stem of BAM's ``model/resnet.py`` (``deep_base=True``), trainable.

    The stem is three 3×3 convolutions, 3→64 (stride 2), 64→64, 64→128, each followed by BatchNorm and ReLU, then the
    3×3 max-pool; layer1 therefore starts from 128 channels. The bottlenecks are the v1.5 ones (stride on the 3×3
    conv, as BAM's and torchvision's). Convolutions get Kaiming-normal (fan_out, ReLU) weights, BatchNorm 1 and 0 (BAM's
    initialisation). ``dilated=True`` gives every block of layer3 dilation 2 and of layer4 dilation 4 with stride 1
    (output stride 8), as BAM's PSPNet does. Module names are BAM's (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``,
    ``bn3``, ``layer1``..``layer4``, ``fc``), so the lineage's ``resnet50_v2.pth`` loads by name.
    """

    def __init__(self, name: str = "resnet50", dilated: bool = True) -> None:
        if name not in DEEP_STEM_LAYERS:
            raise ValueError(f"the deep-stem ResNet is resnet50 or resnet101, not {name!r}")
        layers = DEEP_STEM_LAYERS[name]
        super().__init__(torchvision.models.resnet.Bottleneck, list(layers))
        self.conv1 = _conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = _conv3x3(64, 64)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = _conv3x3(64, 128)
        self.bn3 = nn.BatchNorm2d(128)
        self.inplanes = 128
        self.layer1 = self._make_layer(torchvision.models.resnet.Bottleneck, 64, layers[0])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if dilated:
            dilate_layer(self.layer3, 2)
            dilate_layer(self.layer4, 4)

    def stem(self, img: Tensor) -> Tensor:
        """BAM's ``layer0``: conv1-bn1-ReLU, conv2-bn2-ReLU, conv3-bn3-ReLU, max-pool."""
        x = self.relu(self.bn1(self.conv1(img)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.maxpool(self.relu(self.bn3(self.conv3(x))))

    def features(self, img: Tensor) -> Tensor:
        """layer4's output (BAM's ``encoder``: layer0..layer4)."""
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(img)))))

    def forward(self, img: Tensor) -> Tensor:  # the ImageNet classifier, never used by the lineage
        return self.fc(torch.flatten(self.avgpool(self.features(img)), 1))


def deep_stem_imagenet_path(name: str) -> Path:
    """Where the lineage's ImageNet deep-stem weights of ``name`` are looked for: the hub cache folder."""
    return hub_checkpoint_dir() / DEEP_STEM_IMAGENET_FILES[name]


def load_deep_stem_imagenet(net: DeepStemResNet, name: str) -> None:
    """Load ``resnet50_v2.pth`` / ``resnet101_v2.pth`` (BAM's ``initmodel/``) into ``net``. BAM loads them with
    ``strict=False``: keys the network lacks are ignored, but a parameter the file lacks is an error here."""
    path = deep_stem_imagenet_path(name)
    if not path.is_file():
        raise BackboneWeightsMissingError(
            f"ImageNet weights of the deep-stem {name} not found: {path} does not exist. BAM's README links them "
            f"('pre-trained backbones', put into BAM/initmodel); copy {path.name} to {path.parent}/ (TORCH_HOME moves "
            "it), or train with --no-pretrained."
        )
    state = read_weights_file(path, "deep-stem ImageNet weights")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, _unexpected = net.load_state_dict(state, strict=False)
    if missing:
        raise CorruptFileError(f"{path} is not a deep-stem {name}: it lacks {', '.join(missing[:5])}")


class FrozenStagedDeepResNet(FrozenStagedResNet):
    """:class:`FrozenStagedResNet` on a :class:`DeepStemResNet` (dilated): BAM's frozen ``layer0``..``layer4`` of
    its base learner, the encoder BAM's meta-learner (and so MCE) runs. :meth:`taps` = [layer2, layer3]."""

    def __init__(self, net: DeepStemResNet) -> None:
        FrozenBackbone.__init__(self, net)
        self.feature_layers = ("layer2", "layer3")
        self.channels = tuple(RESNET_LAYER_CHANNELS[name] for name in self.feature_layers)
        self.stage_tap_counts = (0, 0, 0)

    def stem(self, img: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(img)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.maxpool(self.relu(self.bn3(self.conv3(x))))


def build_deep_stem_backbone(name: str = "resnet50", state_dict: dict[str, Tensor] | None = None) -> FrozenBackbone:
    """BAM's frozen base-learner encoder for ``resnet50`` / ``resnet101``: a dilated :class:`DeepStemResNet` (random,
    or loaded strictly from ``state_dict``, keys as the network's), frozen as :class:`FrozenStagedDeepResNet`."""
    net = DeepStemResNet(name, dilated=True)
    if state_dict is not None:
        missing, unexpected = net.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]  # a base learner has no ImageNet classifier
        if missing or unexpected:
            raise CorruptFileError(
                f"the base learner's encoder does not fit a deep-stem {name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    return FrozenStagedDeepResNet(net)
