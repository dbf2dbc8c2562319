"""Merged pseudo-labels: the teacher fills in the organs a sample's dataset does not label."""

from __future__ import annotations

import torch

from sparseseg.ltuda.classify import one_hot_organs, threshold_classify


def merge_pseudo_labels(
    teacher_probabilities: torch.Tensor,
    partial: torch.Tensor,
    labeled: torch.Tensor,
    *,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Merge teacher predictions with the partial ground truth.

    The teacher's class map (threshold classifier) is kept only for organs the sample's
    dataset does not label; the ground truth of the organs it labels overwrites it; every other
    pixel is background. The result is exclusive (at most one organ per pixel).

    The teacher's class map is taken over the unlabeled organs only: where the ground truth
    says a labeled organ is absent, the teacher's (wrong) belief in that organ must not hide an
    unlabeled organ it also finds there (probability at or above the threshold).

    Args:
        teacher_probabilities: ``(B, organs, H, W)`` teacher sigmoid outputs.
        partial: ``(B, organs, H, W)`` partial labels (1 organ, 0 background or unknown).
        labeled: ``(B, organs)`` or ``(B, organs, H, W)`` mask of known channels.
        threshold: Threshold of the linear classifier.

    Returns:
        ``(B, organs, H, W)`` float one-hot organ masks, every channel to be supervised.

    Example:
        >>> probs = torch.tensor([[[[0.9]], [[0.8]]]])  # teacher says organ 1 (0.9 > 0.8)
        >>> gt = torch.tensor([[[[0.0]], [[1.0]]]])  # but organ 2 is labeled there
        >>> merge_pseudo_labels(probs, gt, torch.tensor([[0.0, 1.0]])).flatten().tolist()
        [0.0, 1.0]
    """
    n_organs = partial.shape[1]
    mask = labeled.to(partial.dtype)
    if mask.ndim == 2:
        mask = mask[:, :, None, None]
    mask = mask.expand_as(partial) > 0.5
    unlabeled = torch.where(mask, torch.zeros_like(teacher_probabilities), teacher_probabilities)
    pseudo = one_hot_organs(threshold_classify(unlabeled, threshold), n_organs)
    known = ((partial > 0.5) & mask).float()
    has_gt = known.amax(dim=1, keepdim=True) > 0
    pseudo = torch.where(has_gt, known, pseudo)  # ground truth overwrites everything
    return pseudo
