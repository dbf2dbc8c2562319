"""Merged pseudo-labels: the teacher fills in the organs a sample's dataset does not label."""

from __future__ import annotations

import torch

from sparseseg.ltuda.classify import one_hot_organs, threshold_classify


def _labeled_channels(labeled: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
    """``labeled`` (``(B, organs)`` or ``(B, organs, H, W)``) as a boolean ``partial``-shaped
    mask of the channels whose ground truth is known at each pixel."""
    mask = labeled.to(partial.dtype)
    if mask.ndim == 2:
        mask = mask[:, :, None, None]
    return mask.expand_as(partial) > 0.5


def _ground_truth_organs(partial: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, organs, H, W)``: the labeled organs the ground truth puts at each pixel."""
    return (partial > 0.5) & mask


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
    mask = _labeled_channels(labeled, partial)
    unlabeled = torch.where(mask, torch.zeros_like(teacher_probabilities), teacher_probabilities)
    pseudo = one_hot_organs(threshold_classify(unlabeled, threshold), n_organs)
    known = _ground_truth_organs(partial, mask).float()
    has_gt = known.amax(dim=1, keepdim=True) > 0
    pseudo = torch.where(has_gt, known, pseudo)  # ground truth overwrites everything
    return pseudo


def confident_mask(
    teacher_probabilities: torch.Tensor,
    partial: torch.Tensor,
    labeled: torch.Tensor,
    confidence: float,
) -> torch.Tensor:
    """Where merged pseudo-labels are to be trusted: ``(B, organs, H, W)`` float 0/1.

    A channel the sample's dataset labels is always known. An unlabeled channel is known where
    the teacher is sure either way (probability ``>= confidence`` or ``<= 1 - confidence``) and
    wherever the ground truth puts a labeled organ (an organ pixel is no other organ's).
    Elsewhere the merged pseudo-label (:func:`merge_pseudo_labels`) is left unsupervised
    instead of being taught as "background" or as an organ the teacher only half believes.

    Args:
        teacher_probabilities: ``(B, organs, H, W)`` teacher sigmoid outputs.
        partial: ``(B, organs, H, W)`` partial labels.
        labeled: ``(B, organs)`` or ``(B, organs, H, W)`` mask of known channels.
        confidence: In ``(0.5, 1)``; ``0`` trusts every pixel (the paper).

    Example:
        >>> probs = torch.tensor([[[[0.95, 0.6, 0.02]]]])  # one unlabeled organ, 3 pixels
        >>> gt, known = torch.zeros(1, 1, 1, 3), torch.tensor([[0.0]])
        >>> confident_mask(probs, gt, known, 0.9).flatten().tolist()
        [1.0, 0.0, 1.0]
    """
    if confidence <= 0:
        return torch.ones_like(partial)
    mask = _labeled_channels(labeled, partial)
    sure = (teacher_probabilities >= confidence) | (teacher_probabilities <= 1 - confidence)
    has_gt = _ground_truth_organs(partial, mask).amax(dim=1, keepdim=True)
    return (mask | sure | has_gt).to(partial.dtype)
