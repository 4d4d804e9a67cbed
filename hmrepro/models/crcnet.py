"""CRCNet (Liu, Zhang, Lin, Liu, IJCV 2022; the extension of CRNet, CVPR 2020) with the HM paper's masking modes.

hmrepro's reconstruction from the paper (``../shared/specs/crcnet.md``; no code of CRCNet or CRNet is public).
Every choice the paper leaves open is a constructor argument whose default is the spec's proposal ([G#] of the
spec, listed in the README's CRCNet section); the blocks are in :mod:`.crcnet_modules`.

1-shot, query branch: a frozen dilated ResNet gives layer2 ‖ layer3 at 1/8 [G2–G4]; a shared embedding conv
gives E_q, E_s; the cross-reference gate gives G_q, G_s (mask-free); the conditional module (global: masked
average pooling; local: masked attention) conditions E_q on the support's features and mask, C_q; the mask
refinement module runs T = 10 times on [G_q ‖ C_q] → query logits. In training (``model.train()``) the support
branch runs as well, conditioned on the *query* image and mask (``query_mask=``), and the co-occurrence sub-head
predicts both images from G_q, G_s; :meth:`CRCNet.compute_objective` adds the four losses.

Masking (spec §12): the support mask acts in the masked average pooling and in the local attention (mode
``none`` = the published CRCNet). The other modes replace only the features those two operations read, E_s^cond =
Emb(mode(X_s, X_s^IM, M_s)) with :mod:`.masking`; the cross-reference module and the branch's own prediction keep
the plain features, so no ground truth reaches the support's own loss.

K-shot (:meth:`CRCNet.predict_nshot`, ``kshot``): ``finetune-fusion`` (default) / ``finetune`` fine-tune a copy of
the head on pairs of supports per episode (§4.6, [G22]) and predict with every support (probabilities averaged)
or the first one; ``fusion`` averages K 1-shot predictions (Table 4's baseline). ``scales`` (default (1.0,);
(0.75, 1, 1.25) for the paper's multi-scale testing [G21]) averages the probabilities over rescaled inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import build_dilated_resnet
from .crcnet_modules import (
    WIDTH,
    CoOccurrenceHead,
    CrossReference,
    Embedding,
    GlobalConditional,
    HistoryMaps,
    LocalConditional,
    MaskRefinement,
    resize_mask,
)
from .interface import Batch, FewShotModule, Outputs, logits_of
from .masking import get_masking_mode, mask_image

__all__ = ["CRCNet", "KSHOT_MODES", "episode_seeds", "ignore_cross_entropy"]

BACKBONES = ("resnet50", "resnet101")
KSHOT_MODES = ("finetune-fusion", "finetune", "fusion")
IGNORE = 255


def ignore_cross_entropy(logits: Tensor, mask: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Cross-entropy of logits [B, 2, H, W] against the 0/1 ``mask`` [B, H, W], mean over the pixels that
    ``ignore`` (1 = ignore, e.g. PASCAL's 255 boundary) leaves; 0 (with a gradient) when every pixel is ignored."""
    target = mask.long()
    if ignore is not None:
        target = target.masked_fill(ignore.bool(), IGNORE)
    total = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
    return total / (target != IGNORE).sum().clamp(min=1)


def episode_seeds(seed: int, episode: int) -> tuple[int, int]:
    """The two seeds of one episode's fine-tuning (the pairs of supports; torch's generators for dropout and the
    ``canet`` history): a pure function of (``finetune_seed``, the episode's index)."""
    first, second = np.random.SeedSequence([int(seed), int(episode)]).generate_state(2, np.uint64) >> np.uint64(1)
    return int(first), int(second)


@contextmanager
def _own_random_stream(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's CPU generator (and ``device``'s, on CUDA) seeded with ``seed``; every generator
    is restored afterwards, so what the block draws neither depends on nor changes the caller's stream."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def _upsample(logits: Tensor, size) -> Tensor:
    return F.interpolate(logits, tuple(size), mode="bilinear", align_corners=True)


class CRCNet(FewShotModule):
    """CRCNet on a frozen dilated ``backbone`` (resnet50, resnet101) with support masking ``masking``.

    Ablation switches (the paper's tables): ``cross_reference`` / ``conditional`` (Table 1), ``feature_layers``
    (Table 2 multi-level: ``("layer3",)`` is the single-level row; [G2] ``("layer3", "layer4")``), ``mask_refine``
    (Table 2), ``global_conditional`` / ``local_conditional`` (Table 3), ``gate`` (Table 6), ``local_mask``
    (Table 7, [G11]). Others: ``refine_steps`` T, ``mrm_gradient`` [G13] (``canet``: CaNet's training, one MRM step
    per iteration on the sample's history map, zeroed with probability ``history_zero_prob``), ``dropout`` [G6],
    ``aux_weight`` λ,
    ``map_eps`` (MAP epsilon), and the inference options ``scales``, ``kshot``, ``finetune_*`` [G21, G22].

    Table 1's "cross-reference module only" row is ``conditional=False``, read literally: the query's logits are
    MRM(G_q), and the cross-reference gate that makes G_q compares the two images' features without a mask, so
    the support mask is never an input — the model segments what the query shares with the support image (the
    co-occurrent objects), whatever the support's annotated class. Its only contact with the masks is as training
    targets (the support branch's and the co-occurrence head's losses). The masking mode (``-hm`` etc.) therefore
    changes nothing in this ablation. No text of the paper says otherwise; it is hmrepro's reading.
    """

    takes_query_mask = True
    """The trainer passes ``query_mask=`` to the forward in training (the support branch is conditioned on it)."""

    @property
    def takes_sample_keys(self) -> bool:
        """With ``mrm_gradient="canet"`` the trainer passes ``sample_keys=`` (query and support keys per episode), the
        samples whose history maps the refinement reads and writes in training."""
        return self.history is not None

    takes_episode_context = True
    """``predict_nshot`` takes ``support_ignores=`` (the fine-tuning loss leaves boundary pixels out) and
    ``episode_ids=`` (each episode's fine-tuning draws from its own seeded stream)."""

    def __init__(
        self,
        backbone: str = "resnet50",
        masking: str = "none",
        pretrained: bool = True,
        *,
        feature_layers: Sequence[str] = ("layer2", "layer3"),
        cross_reference: bool = True,
        conditional: bool = True,
        global_conditional: bool = True,
        local_conditional: bool = True,
        gate: str = "sigmoid",
        local_mask: str = "multiply",
        mask_refine: bool = True,
        refine_steps: int = 10,
        mrm_gradient: str = "truncated",
        history_zero_prob: float = 0.7,
        dropout: float = 0.5,
        aux_weight: float = 0.1,
        map_eps: float = 5e-4,
        scales: Sequence[float] = (1.0,),
        kshot: str = "finetune-fusion",
        finetune_steps: int = 50,
        finetune_lr: float = 0.0025,
        finetune_momentum: float = 0.9,
        finetune_weight_decay: float = 5e-4,
        finetune_embedding: bool = False,
        finetune_seed: int = 0,
        finetune_ignore: bool = True,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"CRCNet supports the backbones {BACKBONES}, not {backbone!r}")
        if not (cross_reference or conditional):
            raise ValueError("CRCNet needs the cross-reference module, the conditional module, or both")
        self.backbone_name = backbone
        self.masking = get_masking_mode(masking)
        self.backbone = build_dilated_resnet(backbone, pretrained=pretrained, feature_layers=tuple(feature_layers))
        self.embedding = Embedding(sum(self.backbone.channels))
        self.embedding_dropout = nn.Dropout2d(dropout)
        self.cross_reference = CrossReference(gate=gate) if cross_reference else None
        self.co_occurrence = CoOccurrenceHead() if cross_reference else None
        self.global_conditional = (
            GlobalConditional(dropout=dropout, eps=map_eps) if conditional and global_conditional else None
        )
        self.local_conditional = LocalConditional(mask_mode=local_mask) if conditional and local_conditional else None
        # the MRM reads [G ‖ C^g ‖ C^l] (G = E without the cross-reference module, Table 1 row 1)
        refine_in = WIDTH * (1 + int(self.global_conditional is not None) + int(self.local_conditional is not None))
        self.refine = MaskRefinement(refine_in, steps=refine_steps, use_cache=mask_refine, gradient=mrm_gradient)
        self.history = HistoryMaps(history_zero_prob) if mrm_gradient == "canet" else None
        self.aux_weight = aux_weight
        self.set_inference(scales=scales, kshot=kshot)
        self.finetune = dict(
            steps=finetune_steps,
            lr=finetune_lr,
            momentum=finetune_momentum,
            weight_decay=finetune_weight_decay,
            embedding=finetune_embedding,
            seed=finetune_seed,
            ignore=finetune_ignore,
        )

    def set_inference(self, scales: Sequence[float] | None = None, kshot: str | None = None) -> None:
        """Choose the test-time scales and the K-shot method (``finetune-fusion`` | ``finetune`` | ``fusion``)."""
        if scales is not None:
            if not scales or any(s <= 0 for s in scales):
                raise ValueError(f"scales must be positive numbers, not {tuple(scales)}")
            self.scales = tuple(float(s) for s in scales)
        if kshot is not None:
            if kshot not in KSHOT_MODES:
                raise ValueError(f"kshot must be one of {KSHOT_MODES}, not {kshot!r}")
            self.kshot = kshot

    def inference_options(self) -> dict:
        """The test-time scales and K-shot method in use (:meth:`set_inference`)."""
        return {"scales": self.scales, "kshot": self.kshot}

    # -- features -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def features(self, images: Tensor) -> list[Tensor]:
        """The frozen encoder's levels (layer2, layer3 by default) of a batch of normalised images."""
        return self.backbone.taps(images)

    def conditioning_levels(self, levels: list[Tensor], image: Tensor, mask: Tensor) -> list[Tensor]:
        """The levels the conditioning reads, by the masking mode: plain (``none``), or ``mode(X, X^IM, M)``
        (:mod:`.masking`; the IM pass runs only for the modes that need it)."""
        if not self.masking.needs_masked_image_taps:
            return self.masking.apply(levels, None, mask.to(levels[0].dtype))
        masked_levels = self.features(mask_image(image, mask))
        return self.masking.apply(levels, masked_levels, mask.to(levels[0].dtype))

    def embed(self, levels: list[Tensor]) -> Tensor:
        return self.embedding_dropout(self.embedding(levels))

    # -- the network --------------------------------------------------------------------------------------------

    def condition(self, target: Tensor, conditioning: Tensor, mask: Tensor) -> list[Tensor]:
        """[C^g, C^l] of ``target`` conditioned on ``conditioning`` and its resized ``mask`` [B, 1, h, w]."""
        parts = []
        if self.global_conditional is not None:
            parts.append(self.global_conditional(target, conditioning, mask))
        if self.local_conditional is not None:
            parts.append(self.local_conditional(target, conditioning, mask))
        return parts

    def branch(self, reinforced: Tensor, target: Tensor, conditioning: Tensor, mask: Tensor, keys=None) -> Tensor:
        """Low-resolution logits of one branch: MRM([G ‖ C]) (G = E without the cross-reference module). ``keys``:
        the branch's training samples, whose history maps are its cache under ``mrm_gradient="canet"``."""
        x = torch.cat([reinforced] + self.condition(target, conditioning, mask), dim=1)
        if self.history is None or keys is None or not self.training:
            return self.refine(x)
        logits = self.refine(x, self.history.caches(keys, x))
        self.history.store(keys, logits)
        return logits

    def reinforce(self, query: Tensor, support: Tensor) -> tuple[Tensor, Tensor]:
        if self.cross_reference is None:
            return query, support
        return self.cross_reference(query, support)

    def forward(
        self,
        query_img: Tensor,
        support_img: Tensor,
        support_mask: Tensor,
        query_mask: Tensor | None = None,
        output_size: Sequence[int] | None = None,
        sample_keys: tuple[Sequence, Sequence] | None = None,
    ) -> Outputs:
        """1-shot: images [B, 3, H, W], support mask [B, H, W] → query logits [B, 2, H, W] (eval mode), resized
        (bilinear, align_corners=True) to the support size or ``output_size``. ``sample_keys`` (query keys, support
        keys), one per episode, name the training samples for the ``canet`` history (ignored otherwise).

        In training mode it returns a dict: ``logits`` (query), ``query_aux_logits`` and ``support_aux_logits``
        (the co-occurrence head) and, when ``query_mask`` is given, ``support_logits`` (the support branch
        conditioned on the query), all at the input size.
        """
        size = support_img.shape[-2:] if output_size is None else output_size
        batch = query_img.shape[0]
        levels = self.features(torch.cat([query_img, support_img]))
        query_levels, support_levels = [x[:batch] for x in levels], [x[batch:] for x in levels]
        support_cond = self.conditioning_levels(support_levels, support_img, support_mask)
        query_cond = None
        if self.training and query_mask is not None:
            query_cond = self.conditioning_levels(query_levels, query_img, query_mask)
        return self.decode(
            query_levels, support_levels, support_cond, support_mask, query_cond, query_mask, size, sample_keys
        )

    def decode(
        self,
        query_levels: list[Tensor],
        support_levels: list[Tensor],
        support_cond: list[Tensor],
        support_mask: Tensor,
        query_cond: list[Tensor] | None = None,
        query_mask: Tensor | None = None,
        size: Sequence[int] = (),
        sample_keys: tuple[Sequence, Sequence] | None = None,
    ) -> Outputs:
        """Everything after the frozen encoder (see :meth:`forward`); ``*_cond`` are :meth:`conditioning_levels`.
        The support branch runs in training mode when ``query_cond`` and ``query_mask`` are given."""
        e_query, e_support = self.embed(query_levels), self.embed(support_levels)
        g_query, g_support = self.reinforce(e_query, e_support)
        low = e_query.shape[-2:]
        query_keys, support_keys = sample_keys if sample_keys is not None else (None, None)
        support_key = self._conditioning_embedding(support_cond, e_support)
        logits = _upsample(self.branch(g_query, e_query, support_key, resize_mask(support_mask, low), query_keys), size)
        if not self.training:
            return logits
        outputs = {"logits": logits}
        if self.co_occurrence is not None:
            outputs["query_aux_logits"] = _upsample(self.co_occurrence(g_query), size)
            outputs["support_aux_logits"] = _upsample(self.co_occurrence(g_support), size)
        if query_cond is not None and query_mask is not None:
            query_key = self._conditioning_embedding(query_cond, e_query)
            support_low = self.branch(g_support, e_support, query_key, resize_mask(query_mask, low), support_keys)
            outputs["support_logits"] = _upsample(support_low, size)
        return outputs

    def _conditioning_embedding(self, cond_levels: list[Tensor], plain: Tensor) -> Tensor:
        """E^cond: the plain embedding for mode ``none`` (the same tensor), else the embedding of the masked levels
        (same weights)."""
        return plain if self.masking.name == "none" else self.embed(cond_levels)

    # -- training -----------------------------------------------------------------------------------------------

    def compute_objective(self, outputs: Outputs, batch: Batch) -> Tensor:
        """L = L_QM + L_SM + λ (L_QMsub + L_SMsub) (paper Eqs. 4–5, λ = ``aux_weight``), 2-class cross-entropy at the
        input size with the batch's ignore pixels (PASCAL 255) left out [G14, G15]. Terms whose outputs are absent
        are left out: the validation loss (eval-mode outputs) is L_QM only."""
        query_ignore = batch.get("query_ignore")
        loss = ignore_cross_entropy(logits_of(outputs), batch["query_mask"], query_ignore)
        if isinstance(outputs, Tensor) or not ({"support_logits", "query_aux_logits"} & set(outputs)):
            return loss
        support_mask = batch["support_masks"][:, 0]
        support_ignore = batch["support_ignores"][:, 0] if "support_ignores" in batch else None
        if "support_logits" in outputs:
            loss = loss + ignore_cross_entropy(outputs["support_logits"], support_mask, support_ignore)
        if "query_aux_logits" in outputs:
            aux = ignore_cross_entropy(outputs["query_aux_logits"], batch["query_mask"], query_ignore)
            aux = aux + ignore_cross_entropy(outputs["support_aux_logits"], support_mask, support_ignore)
            loss = loss + self.aux_weight * aux
        return loss

    # -- inference ----------------------------------------------------------------------------------------------

    def query_probability(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor, size) -> Tensor:
        """Foreground-and-background probabilities [B, 2, *size] of the query, averaged over :attr:`scales`."""
        total = None
        for scale in self.scales:
            q, s, m = _rescale(query_img, support_img, support_mask, scale)
            probs = torch.softmax(_upsample(self(q, s, m), size).float(), dim=1)
            total = probs if total is None else total + probs
        return total / len(self.scales)

    def kshot_mask(
        self,
        query_img: Tensor,
        support_imgs: Tensor,
        support_masks: Tensor,
        output_size,
        *,
        support_ignores: Tensor | None = None,
        episode_ids: Sequence[int] | Tensor | None = None,
    ) -> Tensor:
        """0/1 query mask [B, H, W] (int64) of a K-shot episode (supports [B, K, 3, H, W], masks [B, K, H, W]).

        ``fusion`` (and any 1-shot episode): the probabilities of the K 1-shot predictions are averaged.
        ``finetune-fusion`` / ``finetune``: per episode, a copy of the model is fine-tuned on pairs of its supports
        (:meth:`finetuned`), then predicts with every support (averaged) / the first one. The model itself is never
        changed. Multi-scale (:attr:`scales`) applies to the predictions. ``support_ignores`` [B, K, H, W] (1 =
        ignore) and ``episode_ids`` (the episodes' indices in the evaluation; the engine passes both) go to
        :meth:`finetuned`; without ids an episode is known by its place in the batch.
        """
        size = tuple(support_imgs.shape[-2:] if output_size is None else output_size)
        shots = support_imgs.shape[1]
        if self.kshot == "fusion" or shots < 2:
            return self._fused(self, query_img, support_imgs, support_masks, size, range(shots))
        predictions = []
        ids = range(query_img.shape[0]) if episode_ids is None else [int(i) for i in episode_ids]
        for b in range(query_img.shape[0]):  # one fine-tuned copy per episode
            ignores = None if support_ignores is None else support_ignores[b]
            tuned = self.finetuned(support_imgs[b], support_masks[b], ignores, episode=ids[b])
            used = range(shots) if self.kshot == "finetune-fusion" else range(1)
            with torch.no_grad():
                predictions.append(
                    self._fused(
                        tuned, query_img[b : b + 1], support_imgs[b : b + 1], support_masks[b : b + 1], size, used
                    )
                )
        return torch.cat(predictions)

    @staticmethod
    @torch.no_grad()
    def _fused(model: CRCNet, query_img, support_imgs, support_masks, size, shots) -> Tensor:
        was_training = model.training
        model.eval()
        probs = sum(model.query_probability(query_img, support_imgs[:, k], support_masks[:, k], size) for k in shots)
        model.train(was_training)
        return probs.argmax(dim=1)

    def finetuned(
        self, support_imgs: Tensor, support_masks: Tensor, support_ignores: Tensor | None = None, episode: int = 0
    ) -> CRCNet:
        """A copy of the model fine-tuned on one episode's supports [K, 3, H, W], masks [K, H, W] (paper §4.6).

        The copy shares the frozen backbone, whose levels (plain and, by the masking mode, masked) are computed
        once; the embedding conv stays frozen unless ``finetune_embedding`` [G5]. Everything after it is trained
        for ``finetune_steps`` SGD steps (the training lr, momentum and weight decay [G22]) at the base scale, each
        step on one random unordered pair of distinct supports, both predicted (the training loss, all four
        terms), dropout on; under ``mrm_gradient="canet"`` each support's history lives in the copy only.

        Randomness: the pairs, the dropout masks and the ``canet`` history draws come from streams seeded from
        (``finetune_seed``, ``episode``) (:func:`episode_seeds`), and the caller's generators are left as they were,
        so an episode's result does not depend on which episodes were fine-tuned before it. Loss: the supports'
        ``support_ignores`` pixels [K, H, W] (PASCAL's 255 boundary) are left out as in training (``finetune_ignore``,
        default true; false counts them as background, the earlier behaviour).
        Works under ``torch.no_grad`` and ``torch.inference_mode`` (the runner's): gradients are
        switched on and the inputs cloned into normal tensors.
        """
        with torch.inference_mode(False), torch.enable_grad():
            memo = {id(self.backbone): self.backbone}
            if self.history is not None:  # an empty history per episode, keyed by the support's index
                memo[id(self.history)] = HistoryMaps(self.history.zero_prob)
            tuned = copy.deepcopy(self, memo=memo)  # normal tensors, not inference ones
            tuned.embedding.requires_grad_(bool(self.finetune["embedding"]))
            images, masks = support_imgs.clone(), support_masks.clone().float()
            ignores = None
            if support_ignores is not None and self.finetune["ignore"]:
                ignores = support_ignores.clone()
            levels = [x.clone() for x in self.features(images)]
            cond = [x.clone() for x in self.conditioning_levels(levels, images, masks)]
            params = [p for p in tuned.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(
                params,
                lr=self.finetune["lr"],
                momentum=self.finetune["momentum"],
                weight_decay=self.finetune["weight_decay"],
            )
            pair_seed, torch_seed = episode_seeds(self.finetune["seed"], episode)
            generator = torch.Generator().manual_seed(pair_seed)
            tuned.train()
            with _own_random_stream(torch_seed, images.device):
                tuned._finetune_steps(optimizer, generator, levels, cond, masks, ignores, images.shape[-2:])
            tuned.eval()
        return tuned

    def _finetune_steps(self, optimizer, generator, levels, cond, masks, ignores, size) -> None:
        """The SGD steps of :meth:`finetuned` on this (copied) model: each on one random unordered pair (a, b) of
        distinct supports, a predicted from b and b from a (the training loss)."""

        def pick(xs: list[Tensor], i: int) -> list[Tensor]:
            return [x[i : i + 1] for x in xs]

        for _ in range(self.finetune["steps"]):
            a, b = torch.randperm(masks.shape[0], generator=generator)[:2].tolist()
            outputs = self.decode(
                pick(levels, a),
                pick(levels, b),
                pick(cond, b),
                masks[b : b + 1],
                pick(cond, a),
                masks[a : a + 1],
                size,
                ([a], [b]),
            )
            pair = {"query_mask": masks[a : a + 1], "support_masks": masks[b : b + 1, None]}
            if ignores is not None:
                pair.update(query_ignore=ignores[a : a + 1], support_ignores=ignores[b : b + 1, None])
            loss = self.compute_objective(outputs, pair)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def _rescale(query_img: Tensor, support_img: Tensor, support_mask: Tensor, scale: float):
    """Both images (bilinear) and the support mask (nearest) resized to ``scale`` × their size (rounded)."""
    if scale == 1.0:
        return query_img, support_img, support_mask
    size = [max(1, round(d * scale)) for d in support_img.shape[-2:]]
    mask = F.interpolate(support_mask.unsqueeze(1).float(), size, mode="nearest").squeeze(1)
    qsize = [max(1, round(d * scale)) for d in query_img.shape[-2:]]
    return (
        F.interpolate(query_img, qsize, mode="bilinear", align_corners=True),
        F.interpolate(support_img, size, mode="bilinear", align_corners=True),
        mask,
    )
