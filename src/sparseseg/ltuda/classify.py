"""Turning network outputs into class maps (background 0, organ k at k)."""

from __future__ import annotations

import torch


def threshold_classify(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """LTUDA's linear threshold classifier (Eq. 2).

    Args:
        probabilities: ``(B, organs, ...)`` sigmoid outputs.
        threshold: Background where the largest organ probability is below it.

    Returns:
        ``(B, ...)`` long tensor: 0 background, ``k`` (1-based) for organ channel ``k - 1``.

    Example:
        >>> p = torch.tensor([[[0.2], [0.7]]])  # 1 sample, 2 organs, 1 pixel
        >>> threshold_classify(p).tolist()
        [[2]]
    """
    top, index = probabilities.max(dim=1)
    return torch.where(top >= threshold, index + 1, torch.zeros_like(index))


def one_hot_organs(classes: torch.Tensor, n_organs: int) -> torch.Tensor:
    """``(B, H, W)`` class map -> ``(B, organs, H, W)`` float masks (no background channel)."""
    values = torch.arange(1, n_organs + 1, device=classes.device).view(1, -1, 1, 1)
    return (classes[:, None] == values).float()


def organs_to_classes(masks: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`one_hot_organs` for exclusive masks: ``(B, organs, H, W)`` -> class map.

    Where several organs are set, the first wins; where none, background.
    """
    present, index = masks.max(dim=1)
    return torch.where(present > 0.5, index + 1, torch.zeros_like(index))
