"""MCE (Xu et al., "Masked Cross-image Encoding for Few-shot Segmentation", arXiv 2308.11201) with the support
masking modes of the HM paper, reconstructed from the paper and ``../shared/specs/mce.md`` (no MCE code is public).

Everything except the cross-image encoder and the mean-similarity prior is BAM's meta-learner (PFENet with an
ASPP head). One 1-shot episode, ResNet-50, 473 px (spec §2, §4):

- frozen dilated backbone (output stride 8, :func:`~.backbone.build_dilated_backbone`): query q2, q3, q4 and
  support s2, s3, s4' = layer4(s3 ⊙ m) (PFENet), post-ReLU stage outputs; the support features then go through
  the masking mode (:mod:`.masking`, spec §11: ``none`` = the paper, HM = FM where FM > 0 else IM);
- query feature f_Q = down_query(cat(q3, q2)); prototype V_s = masked average of down_supp(cat(t3, t2));
- prior A_sim: mean over support positions of the cosine between q4 and the support layer-4 feature (t4 ⊙ m in
  mode ``none``, t4 otherwise), min-max normalised per sample, in fp32 (:func:`mean_similarity_prior`);
- masked cross-image encoder per level (:class:`CrossImageEncoder`), fused by a 1×1 conv into f_cross;
- cat(f_Q, V_s, f_cross, A_sim) → init_merge → ASPP → res1 → res2 (+ skip) → cls → logits, bilinear
  (align_corners=True) to the query size, and from there to ``output_size`` if one is asked (BAM's two steps).

K-shot averages the per-shot V_s, A_sim and f_cross before the decoder (the paper), so :meth:`MCE.predict_nshot`
is not the HSNet vote. Every open choice [A#] of the spec is a constructor argument with the spec's default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MissingDataError
from .backbone import build_deep_stem_backbone, build_dilated_backbone
from .interface import Batch, FewShotModule, Outputs, logits_of, pixel_cross_entropy
from .masking import get_masking_mode, masked_support_taps

__all__ = [
    "ASPP",
    "MCE",
    "CrossImageEncoder",
    "binary_key_mask",
    "masked_average_pool",
    "mean_similarity_prior",
]

BACKBONES = ("resnet50", "resnet101", "vgg16")
LEVELS = (2, 3, 4)
ENCODERS = ("pspnet", "imagenet")
"""``pspnet``: BAM's frozen base-learner encoder (the paper's, through BAM*); ``imagenet``: torchvision's ImageNet
network (7×7 stem, vgg16_bn), a deviation, and hmrepro's only encoder before ``encoder`` existed."""


# ---------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------


def binary_key_mask(mask: Tensor) -> Tensor:
    """[A4] The encoder's key mask [B, T] (bool, True = support foreground) from the resized mask [B, T]: m ≥ 0.5;
    a sample with no such cell uses m > 0; a sample with none of those lets every key through (no NaN row)."""
    keys = mask >= 0.5
    keys = torch.where(keys.any(1, keepdim=True), keys, mask > 0)
    return torch.where(keys.any(1, keepdim=True), keys, torch.ones_like(keys))


def masked_average_pool(feat: Tensor, mask: Tensor) -> Tensor:
    """BAM/PFENet's ``Weighted_GAP``: Σ feat·m / (Σ m + 0.0005) per channel → [B, C, 1, 1]; mask [B, 1, h, w]."""
    area = mask.sum(dim=(2, 3), keepdim=True) + 0.0005
    return (feat * mask).sum(dim=(2, 3), keepdim=True) / area


def mean_similarity_prior(query_feat: Tensor, support_feat: Tensor, eps: float = 1e-7) -> Tensor:
    """A_sim [B, 1, h, w] (spec §4.3): for each query position the *mean* over all support positions of the cosine
    similarity (PFENet/BAM take the max), then min-max normalised per sample. Computed in fp32 even under autocast."""
    bsz, _, height, width = query_feat.shape
    with torch.autocast(query_feat.device.type, enabled=False):
        query = query_feat.float().flatten(2)  # [B, C, Tq]
        support = support_feat.float().flatten(2).transpose(1, 2)  # [B, Ts, C]
        norms = support.norm(dim=2, keepdim=True) * query.norm(dim=1, keepdim=True)  # [B, Ts, Tq]
        cosine = torch.bmm(support, query) / (norms + eps)
        prior = cosine.mean(dim=1)  # [B, Tq]
        low = prior.min(dim=1, keepdim=True).values
        high = prior.max(dim=1, keepdim=True).values
        prior = (prior - low) / (high - low + eps)
    return prior.view(bsz, 1, height, width)


def _reduce(in_channels: int, out_channels: int, dropout: float = 0.0) -> nn.Sequential:
    """PFENet/BAM's 1×1 reduction: conv without bias, ReLU (and Dropout2d where they have one)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout2d(p=dropout))
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """BAM's ASPP: five parallel 256 → 256 branches with bias and ReLU — image pooling (1×1 conv, broadcast), 1×1,
    3×3 with dilation 6, 12, 18 — concatenated (1280 channels). Kaiming-normal conv weights (BAM's init)."""

    def __init__(self, channels: int = 256, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        conv = lambda k, d: nn.Sequential(  # noqa: E731
            nn.Conv2d(channels, channels, k, padding=0 if k == 1 else d, dilation=d), nn.ReLU(inplace=True)
        )
        self.pool = conv(1, 1)
        self.branches = nn.ModuleList([conv(1, 1)] + [conv(3, rate) for rate in rates])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
        return torch.cat([pooled] + [branch(x) for branch in self.branches], dim=1)


class CrossImageEncoder(nn.Module):
    """The masked cross-image encoder of one backbone level (spec §4.4, Eqs. 3-9).

    Tokens [B, T, C] of the query and the support are projected to (q, k, v) per image (``Linear(C, 3·dim)``;
    ``heads`` heads). ``attention="literal"`` (the paper, [A1]): the support branch applies the support's own
    affinity (S_q S_kᵀ, background *key* columns removed [A2]) to the query's values Q_v; the query branch applies
    the query's own affinity (Q_q Q_kᵀ) to the support's values with background value tokens zeroed [A3].
    ``attention="cross"``: ordinary cross-attention (support rows at background × k; query → support keys masked).
    Each branch then gives MLP(LayerNorm(R)) [A7, A8]; ``block="residual"`` adds R back (pre-norm residual).
    ``branches`` (``both`` | ``query`` | ``support``, Table III) chooses which branch maps are returned.
    Fused attention (``F.scaled_dot_product_attention``) never materialises the T×T matrix.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 256,
        heads: int = 8,
        mlp_ratio: int = 4,
        branches: str = "both",
        attention: str = "literal",
        block: str = "plain",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"token width {dim} is not a multiple of {heads} heads")
        if branches not in ("both", "query", "support"):
            raise ValueError(f"branches must be 'both', 'query' or 'support', not {branches!r}")
        if attention not in ("literal", "cross"):
            raise ValueError(f"attention must be 'literal' or 'cross', not {attention!r}")
        if block not in ("plain", "residual"):
            raise ValueError(f"block must be 'plain' or 'residual', not {block!r}")
        self.dim, self.heads, self.branches, self.attention, self.block = dim, heads, branches, attention, block
        self.support_proj = nn.Linear(in_channels, 3 * dim)
        self.query_proj = nn.Linear(in_channels, 3 * dim)
        self.outputs = ("query", "support") if branches == "both" else (branches,)
        self.norms = nn.ModuleDict({name: nn.LayerNorm(dim) for name in self.outputs})
        self.mlps = nn.ModuleDict({name: _mlp(dim, mlp_ratio) for name in self.outputs})

    def _split(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, T, 3·dim] → q, k, v, each [B, heads, T, dim/heads]."""
        bsz, length, _ = tokens.shape
        heads = tokens.view(bsz, length, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        return heads[0], heads[1], heads[2]

    def attend(self, query_feat: Tensor, support_feat: Tensor, keys: Tensor) -> dict[str, Tensor]:
        """The attention results R [B, T, dim] per branch; features [B, C, h, w], keys [B, T] (bool)."""
        if query_feat.shape[-2:] != support_feat.shape[-2:]:
            raise ValueError(
                f"MCE's encoder needs query and support features of the same size, got {tuple(query_feat.shape[-2:])} "
                f"and {tuple(support_feat.shape[-2:])}: resize both images to the same square size"
            )
        s_q, s_k, s_v = self._split(self.support_proj(support_feat.flatten(2).transpose(1, 2)))
        q_q, q_k, q_v = self._split(self.query_proj(query_feat.flatten(2).transpose(1, 2)))
        key_mask = keys[:, None, None, :]  # [B, 1, 1, T]: True = attend
        row_mask = keys[:, None, :, None].to(s_v.dtype)  # [B, 1, T, 1]
        results = {}
        if "support" in self.outputs:
            if self.attention == "literal":
                out = F.scaled_dot_product_attention(s_q, s_k, q_v, attn_mask=key_mask)
            else:
                out = F.scaled_dot_product_attention(s_q, q_k, q_v) * row_mask
            results["support"] = out
        if "query" in self.outputs:
            if self.attention == "literal":
                out = F.scaled_dot_product_attention(q_q, q_k, s_v * row_mask)
            else:
                out = F.scaled_dot_product_attention(q_q, s_k, s_v, attn_mask=key_mask)
            results["query"] = out
        return {name: out.transpose(1, 2).flatten(2) for name, out in results.items()}

    def forward(self, query_feat: Tensor, support_feat: Tensor, keys: Tensor) -> list[Tensor]:
        """The branch maps [B, dim, h, w], query branch first (f'^Q, f'^S)."""
        bsz, _, height, width = query_feat.shape
        maps = []
        for name, result in self.attend(query_feat, support_feat, keys).items():
            out = self.mlps[name](self.norms[name](result))
            if self.block == "residual":
                out = out + result
            maps.append(out.transpose(1, 2).reshape(bsz, self.dim, height, width))
        return maps


def _mlp(dim: int, ratio: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


class MCE(FewShotModule):
    """MCE on a frozen ``backbone`` (resnet50, resnet101, vgg16 = vgg16_bn) with support masking ``masking``.

    Open choices of the spec (§10), with its defaults: ``dim`` 256 and ``heads`` 8 [A5], ``mlp_ratio`` 4 [A7],
    ``block`` plain [A8], ``attention`` literal [A1], ``levels`` (2, 3, 4) [A24], ``branches`` both [A26],
    ``use_cross`` / ``use_prior`` [A25] (Table IV), ``query_dropout`` 0.5 [A27], ``cls_dropout`` 0.1.

    ``encoder`` [A21]: ``pspnet`` (the default, what the paper did: MCE builds on BAM*, whose frozen encoder is the
    fold's PSPNet base learner — a dilated deep-stem ResNet, :func:`~.backbone.build_deep_stem_backbone`) loads
    ``encoder_weights``: a ``hmrepro train pspnet`` run folder of the same benchmark and fold, or a PSPNet checkpoint
    such as BAM's published ``best.pth``. ``pretrained=False`` builds a random deep-stem network and reads no
    ``encoder_weights`` (as it reads no ImageNet weights): what evaluation does before loading a checkpoint that holds
    the encoder.
    ``imagenet`` is torchvision's ImageNet network (``pretrained``), a deviation. VGG-16: the base learner's encoder
    has the structure of ``vgg16_bn``; hmrepro trains no VGG base learner, so ``pspnet`` needs ``pretrained=False``.
    """

    trains_kshot = True
    """The 5-shot model trains on 5-shot episodes [A22]: :meth:`forward` takes K supports too."""

    def __init__(
        self,
        backbone: str = "resnet50",
        masking: str = "none",
        pretrained: bool = True,
        *,
        dim: int = 256,
        heads: int = 8,
        mlp_ratio: int = 4,
        block: str = "plain",
        attention: str = "literal",
        levels: Sequence[int] = LEVELS,
        branches: str = "both",
        use_cross: bool = True,
        use_prior: bool = True,
        query_dropout: float = 0.5,
        cls_dropout: float = 0.1,
        encoder: str = "pspnet",
        encoder_weights: str = "",
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"MCE supports the backbones {BACKBONES}, not {backbone!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, not {encoder!r}")
        levels = tuple(sorted(int(level) for level in levels))
        if not levels or any(level not in LEVELS for level in levels):
            raise ValueError(f"levels must be a non-empty subset of {LEVELS}, not {levels}")
        self.backbone_name = backbone
        self.masking = get_masking_mode(masking)
        self.encoder, self.encoder_weights = encoder, str(encoder_weights or "")
        self.backbone = _build_encoder(backbone, pretrained, encoder, self.encoder_weights)
        channels = dict(zip(LEVELS, _stage_channels(backbone)))
        self.levels, self.use_cross, self.use_prior = levels, use_cross, use_prior
        self.down_query = _reduce(channels[2] + channels[3], dim, query_dropout)
        self.down_supp = _reduce(channels[2] + channels[3], dim, query_dropout)
        if use_cross:
            self.encoders = nn.ModuleDict(
                {
                    str(level): CrossImageEncoder(channels[level], dim, heads, mlp_ratio, branches, attention, block)
                    for level in levels
                }
            )
            maps = len(levels) * (2 if branches == "both" else 1)
            self.cross_fusion = _reduce(maps * dim, dim)
        merged = 2 * dim + (dim if use_cross else 0) + (1 if use_prior else 0)
        self.init_merge = _reduce(merged, dim)
        self.aspp = ASPP(dim)
        self.res1 = _reduce(5 * dim, dim)
        self.res2 = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p=cls_dropout),
            nn.Conv2d(dim, 2, 1),
        )

    # -- features ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def query_features(self, query_img: Tensor) -> list[Tensor]:
        """[q2, q3, q4] of the query images (never masked)."""
        q2, q3 = self.backbone.taps(query_img)
        return [q2, q3, self.backbone.layer4(q3)]

    @torch.no_grad()
    def support_features(self, support_img: Tensor, support_mask: Tensor) -> tuple[list[Tensor], Tensor]:
        """Support taps [t2, t3, t4] after the masking mode, and the mask m [B, 1, h, w] at the feature size.

        The plain support's layer 4 runs on s3 ⊙ m (PFENet, M1), the input-masked support's on its own s3; plain
        and input-masked images share one backbone batch (:func:`~.masking.masked_support_taps`)."""
        mask = support_mask.to(support_img.dtype)
        bsz, plain = support_img.shape[0], self.masking.needs_image_taps

        def extract(images: Tensor) -> list[Tensor]:
            s2, s3 = self.backbone.taps(images)
            layer4_input = torch.cat([s3[:bsz] * _resize_mask(mask, s3), s3[bsz:]]) if plain else s3
            return [s2, s3, self.backbone.layer4(layer4_input)]

        taps = masked_support_taps(self.masking, extract, support_img, mask)
        return taps, _resize_mask(mask, taps[-1])

    def _shot_features(self, query: Sequence[Tensor], support: Sequence[Tensor], m: Tensor) -> list[Tensor]:
        """Per (query, support) pair: V_s tiled, f_cross and A_sim as the model uses them (absent ones omitted)."""
        q2, _, q4 = query
        t2, t3, t4 = support
        prototype = masked_average_pool(self.down_supp(torch.cat([t3, t2], dim=1)), m)
        features = [prototype.expand(-1, -1, *q2.shape[-2:])]
        if self.use_cross:
            keys = binary_key_mask(m.flatten(1))
            maps = []
            for level in self.levels:
                maps += self.encoders[str(level)](query[level - 2], support[level - 2], keys)
            features.append(self.cross_fusion(torch.cat(maps, dim=1)))
        if self.use_prior:
            prior_support = t4 * m if self.masking.name == "none" else t4  # the paper's FM at M2; HM replaces it
            features.append(mean_similarity_prior(q4, prior_support).to(q2.dtype))
        return features

    def decode(self, query_feat: Tensor, shot_features: Sequence[Tensor]) -> Tensor:
        """cat(f_Q, V_s, f_cross, A_sim) → init_merge → ASPP → res1 → res2 (+ skip) → cls: logits [B, 2, h, w]."""
        x = self.init_merge(torch.cat([query_feat, *shot_features], dim=1))
        x = self.res1(self.aspp(x))
        x = self.res2(x) + x
        return self.cls(x)

    # -- 1-shot and K-shot -------------------------------------------------------------------------------------

    def logits(
        self,
        query_img: Tensor,
        support_imgs: Tensor,
        support_masks: Tensor,
        output_size: Sequence[int] | None = None,
    ) -> Tensor:
        """Logits [B, 2, H, W] of a K-shot episode (supports [B, K, 3, H, W], masks [B, K, H, W]): the per-shot V_s,
        f_cross and A_sim are averaged (the paper); resized (bilinear, align_corners=True) to the query image
        size, then, if ``output_size`` differs, from there to ``output_size``: BAM's two steps (its model upsamples to
        the input, 60 → 473; its validation and test scripts resize that to the label), not one."""
        bsz, shots = support_imgs.shape[:2]
        query = self.query_features(query_img)
        support, m = self.support_features(support_imgs.flatten(0, 1), support_masks.flatten(0, 1))
        repeated = [feat.repeat_interleave(shots, dim=0) for feat in query] if shots > 1 else query
        per_shot = self._shot_features(repeated, support, m)
        averaged = [feat.view(bsz, shots, *feat.shape[1:]).mean(dim=1) for feat in per_shot]
        query_feat = self.down_query(torch.cat([query[1], query[0]], dim=1))
        logits = self.decode(query_feat, averaged)
        # BAM's two steps: the model's output at the input size (BAM.py), then the scripts' resize to the label
        logits = F.interpolate(logits, tuple(query_img.shape[-2:]), mode="bilinear", align_corners=True)
        if output_size is None or tuple(output_size) == tuple(query_img.shape[-2:]):
            return logits
        return F.interpolate(logits, tuple(output_size), mode="bilinear", align_corners=True)

    def forward(
        self, query_img: Tensor, support_img: Tensor, support_mask: Tensor, output_size: Sequence[int] | None = None
    ) -> Tensor:
        """Logits [B, 2, H, W] of a 1-shot episode (support [B, 3, H, W], mask [B, H, W], 0/1, any dtype) or of a
        K-shot one (supports [B, K, 3, H, W], masks [B, K, H, W]; K-shot training, :meth:`logits`)."""
        if support_img.dim() == 4:
            support_img, support_mask = support_img[:, None], support_mask[:, None]
        return self.logits(query_img, support_img, support_mask, output_size)

    def kshot_mask(self, query_img: Tensor, support_imgs: Tensor, support_masks: Tensor, output_size) -> Tensor:
        """0/1 query mask [B, H, W] (int64): argmax of the K-shot logits (feature averaging, not a vote)."""
        return self.logits(query_img, support_imgs, support_masks, output_size).argmax(dim=1)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_objective(self, outputs: Outputs, batch: Batch) -> Tensor:
        """[A17] The BAM meta-learner's / PFENet's loss: one cross-entropy, ``batch["query_ignore"]`` pixels (PASCAL
        boundaries, the augmentation's padding) left out (:func:`~.interface.pixel_cross_entropy` with ignore)."""
        return pixel_cross_entropy(logits_of(outputs).float(), batch["query_mask"], batch.get("query_ignore"))


def _build_encoder(backbone: str, pretrained: bool, encoder: str, weights: str):
    """The frozen encoder (see :class:`MCE`): ImageNet's, or the base learner's (from ``weights``, else random)."""
    if encoder == "imagenet":
        if weights:
            raise ValueError("encoder_weights belongs to encoder=pspnet; encoder=imagenet takes torchvision's weights")
        return build_dilated_backbone(backbone, pretrained=pretrained)
    if weights and pretrained and backbone == "vgg16":
        raise ValueError("hmrepro has no VGG-16 PSPNet base learner; use a ResNet, or encoder=imagenet (a deviation)")
    if weights == "official" and pretrained:
        raise MissingDataError(
            "encoder_weights=official names the fold's published BAM base learner, which `hmrepro train` resolves; "
            "in Python pass hmrepro.acquisition.resolve_official_weights('pspnet', backbone, benchmark, fold)"
        )
    if weights and pretrained:  # pretrained=False: the structure only (a checkpoint that holds the encoder follows)
        from .pspnet import base_learner_encoder_state

        return build_deep_stem_backbone(backbone, base_learner_encoder_state(weights))
    if pretrained:
        raise MissingDataError(
            "MCE's encoder is the fold's PSPNet base learner (BAM's, what the paper did): train it with `hmrepro "
            "train pspnet -b BENCHMARK -f FOLD` and pass --model-args 'encoder_weights=RUN_FOLDER' (or BAM's "
            "published best.pth of that fold), or use --model-args encoder=imagenet (ImageNet weights, a deviation)"
        )
    if backbone == "vgg16":  # the base learner's VGG encoder has vgg16_bn's structure
        return build_dilated_backbone(backbone, pretrained=False)
    return build_deep_stem_backbone(backbone)


def _resize_mask(mask: Tensor, like: Tensor) -> Tensor:
    """The [B, H, W] mask resized to ``like``'s size (bilinear, align_corners=True) → [B, 1, h, w]."""
    return F.interpolate(mask.unsqueeze(1), like.shape[-2:], mode="bilinear", align_corners=True)


def _stage_channels(backbone: str) -> tuple[int, int, int]:
    """Channels of the level-2, -3 and -4 features."""
    return (256, 512, 512) if backbone == "vgg16" else (512, 1024, 2048)
