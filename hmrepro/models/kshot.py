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

import torch
from torch import Tensor

from .interface import FewShotModule
from .masking import masked_support_taps

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

    @torch.no_grad()
    def query_taps(self, query_img: Tensor) -> list[Tensor]:
        """The (never masked) query features the learner reads, computed once per episode: by default the frozen
        backbone's taps."""
        return self.backbone.taps(query_img)

    @torch.no_grad()
    def support_taps(self, support_img: Tensor, support_mask: Tensor) -> list[Tensor]:
        """The (masked) features of one support image [B, 3, H, W] with its 0/1 mask [B, H, W]: by default the
        masking mode's merge of :meth:`support_image_taps`, plain and input-masked images through the backbone in
        one batch."""
        mask = support_mask.to(support_img.dtype)
        return masked_support_taps(self.masking, self.support_image_taps, support_img, mask)

    def support_image_taps(self, images: Tensor) -> list[Tensor]:
        """Taps of support images (plain or input-masked) before the masking mode merges them: the backbone's."""
        return self.backbone.taps(images)

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
        return self.shot_logits(self.query_taps(query_img), support_img, support_mask, size)

    def kshot_mask(self, query_img: Tensor, support_imgs: Tensor, support_masks: Tensor, output_size) -> Tensor:
        """0/1 query mask [B, H, W] (int64) by the authors' K-shot vote; supports [B, K, 3, H, W], masks [B, K, H, W].

        Every shot is a 1-shot prediction whose logits are bit for bit those of ``forward`` on that shot; see
        :func:`kshot_vote`. With K = 1 this is the 1-shot argmax.
        """
        size = support_imgs.shape[-2:] if output_size is None else output_size
        query_taps = self.query_taps(query_img)
        shot_predictions = [
            self.shot_logits(query_taps, support_imgs[:, shot], support_masks[:, shot], size).argmax(dim=1)
            for shot in range(support_imgs.shape[1])
        ]
        return kshot_vote(torch.stack(shot_predictions, dim=1))
