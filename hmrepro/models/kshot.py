"""The authors' K-shot vote (HSNet's, also VAT's and ASNet's), in one place.

:func:`kshot_vote` turns per-shot 0/1 predictions into one mask. :class:`ShotVoteModel` is the base class of the
families whose K-shot prediction is that vote over 1-shot predictions (HSNet, VAT, ASNet): a family gives
:meth:`~ShotVoteModel.query_taps`, :meth:`~ShotVoteModel.support_taps` and :meth:`~ShotVoteModel.logits_from_taps`
(or its own :meth:`~ShotVoteModel.shot_logits`), and gets ``forward`` and ``predict_nshot`` from here. The query
taps are computed once per episode and each shot's support pass, correlation and learner run one shot at a time
(the authors recompute the query per shot): the same numbers bit for bit, less work, and the peak memory of a
1-shot forward whatever K.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from .interface import FewShotModule
from .masking import masked_support_taps, support_images

__all__ = ["ShotVoteModel", "kshot_vote"]


def kshot_vote(shot_predictions: Tensor) -> Tensor:
    """The authors' K-shot vote over per-shot 0/1 predictions [B, K, H, W] → [B, H, W] (int64).

    Votes are summed over shots and divided by max(the sample's largest vote, 1); pixels at ≥ 0.5 are 1.
    """
    votes = shot_predictions.long().sum(dim=1)
    if shot_predictions.shape[1] == 1:
        return votes
    max_vote = votes.flatten(1).max(dim=1).values.clamp(min=1).view(-1, 1, 1)
    return (votes.float() / max_vote >= 0.5).long()


class ShotVoteModel(FewShotModule):
    """A model whose K-shot prediction is the authors' vote over 1-shot predictions (see the module docstring)."""

    folds_backbone_batchnorm = False
    """Whether eval mode runs the backbone with BatchNorm folded into its convolutions
    (:meth:`~hmrepro.models.backbone.FrozenResNet.set_batchnorm_folding`; same taps up to float rounding)."""

    def train(self, mode: bool = True) -> ShotVoteModel:
        """Training or eval mode; with :attr:`folds_backbone_batchnorm`, eval mode folds the backbone's BatchNorm."""
        super().train(mode)
        if self.folds_backbone_batchnorm and hasattr(self.backbone, "set_batchnorm_folding"):
            if self.backbone.fold_batchnorm == mode:  # only on a change: building the folded weights costs ~0.1 s
                self.backbone.set_batchnorm_folding(not mode)
        return self

    batches_query_with_support = False
    """Whether eval mode runs the query and the first shot's support images (plain and input-masked) through the
    backbone in one batch (:meth:`first_shot_prefetched`): fewer, fuller backbone calls; per image the same taps up
    to float rounding. Training always runs them separately."""

    @contextmanager
    def first_shot_prefetched(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor):
        """Within this context, :meth:`backbone_taps` of the query and of this shot's support batch come from one
        backbone call made here (when :attr:`batches_query_with_support`, in eval mode, for images of one size).
        The query's taps are copied out of the joint batch, so that its support part is freed as soon as the
        masking mode has merged it (the query taps live for the whole episode)."""
        if not (self.batches_query_with_support and not self.training and query_img.shape == support_img.shape):
            yield
            return
        supports = support_images(self.masking, support_img, support_mask.to(support_img.dtype))
        taps = self.backbone.taps(torch.cat([query_img, supports]))
        bsz = query_img.shape[0]
        query_taps = [t[:bsz].clone() for t in taps]
        self._prefetched_taps = [(query_img, query_taps), (supports, [t[bsz:] for t in taps])]
        del taps, query_taps
        try:
            yield
        finally:
            self._prefetched_taps = []

    def backbone_taps(self, images: Tensor) -> list[Tensor]:
        """The frozen backbone's taps of ``images``, or those :meth:`first_shot_prefetched` computed for equal images
        (handed out once)."""
        prefetched = getattr(self, "_prefetched_taps", [])
        for index, (batch, taps) in enumerate(prefetched):
            if batch.shape == images.shape and torch.equal(batch, images):
                del prefetched[index]
                return taps
        return self.backbone.taps(images)

    @torch.no_grad()
    def query_taps(self, query_img: Tensor) -> list[Tensor]:
        """The (never masked) query features the learner reads, computed once per episode: by default the frozen
        backbone's taps."""
        return self.backbone_taps(query_img)

    @torch.no_grad()
    def support_taps(self, support_img: Tensor, support_mask: Tensor) -> list[Tensor]:
        """The (masked) features of one support image [B, 3, H, W] with its 0/1 mask [B, H, W]: by default the
        masking mode's merge of :meth:`support_image_taps`, plain and input-masked images through the backbone in
        one batch."""
        mask = support_mask.to(support_img.dtype)
        return masked_support_taps(self.masking, self.support_image_taps, support_img, mask)

    def support_image_taps(self, images: Tensor) -> list[Tensor]:
        """Taps of support images (plain or input-masked) before the masking mode merges them: the backbone's."""
        return self.backbone_taps(images)

    def logits_from_taps(
        self, query_taps: Sequence[Tensor], support_taps: Sequence[Tensor], output_size: Sequence[int]
    ) -> Tensor:
        """Learner logits [B, 2, *output_size] from the query taps and one shot's support taps."""
        raise NotImplementedError

    def shot_logits(
        self, query_taps: Sequence[Tensor], support_img: Tensor, support_mask: Tensor, output_size: Sequence[int]
    ) -> Tensor:
        """1-shot logits [B, 2, *output_size] from the query taps and one support image [B, 3, H, W] with its
        0/1 mask [B, H, W]: :meth:`logits_from_taps` of :meth:`support_taps` (``forward`` and the K-shot vote run
        it)."""
        return self.logits_from_taps(query_taps, self.support_taps(support_img, support_mask), output_size)

    def forward(
        self,
        query_img: Tensor,
        support_img: Tensor,
        support_mask: Tensor,
        output_size: Sequence[int] | None = None,
    ) -> Tensor:
        """1-shot logits [B, 2, H, W]: images [B, 3, H, W], mask [B, H, W] (0/1, any dtype).

        The logits are resized to the support image size, or to ``output_size`` (H, W) when given (evaluation at
        the query's original size).
        """
        size = support_img.shape[-2:] if output_size is None else output_size
        with self.first_shot_prefetched(query_img, support_img, support_mask):
            return self.shot_logits(self.query_taps(query_img), support_img, support_mask, size)

    def kshot_mask(self, query_img: Tensor, support_imgs: Tensor, support_masks: Tensor, output_size) -> Tensor:
        """0/1 query mask [B, H, W] (int64) by the authors' K-shot vote; supports [B, K, 3, H, W], masks [B, K, H, W].

        Every shot is a 1-shot prediction whose logits are bit for bit those of ``forward`` on that shot; see
        :func:`kshot_vote`. With K = 1 this is the 1-shot argmax.
        """
        size = support_imgs.shape[-2:] if output_size is None else output_size
        shots = support_imgs.shape[1]
        first_img, first_mask = support_imgs[:, 0], support_masks[:, 0]
        with self.first_shot_prefetched(query_img, first_img, first_mask):
            query_taps = self.query_taps(query_img)
            shot_predictions = [self.shot_logits(query_taps, first_img, first_mask, size).argmax(dim=1)]
        shot_predictions += [
            self.shot_logits(query_taps, support_imgs[:, shot], support_masks[:, shot], size).argmax(dim=1)
            for shot in range(1, shots)
        ]
        return kshot_vote(torch.stack(shot_predictions, dim=1))
