"""The partial-label loss: binary cross-entropy only where the organ's label is known."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def partial_bce(logits: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """Per-channel BCE averaged over the (pixel, organ) pairs whose label is known.

    Channels of organs that a sample's dataset does not label carry no loss and no gradient:
    their zeros mean "unknown", not background.

    Args:
        logits: ``(B, organs, H, W)`` raw network outputs.
        target: Same shape, 1 where the organ is, 0 elsewhere.
        labeled: Bool/float mask broadcastable to ``logits``: ``(B, organs)`` for whole
            channels, or ``(B, organs, H, W)`` after CutMix mixed samples of several datasets.

    Returns:
        Scalar loss (0 with zero gradient when nothing is labeled).

    Example:
        >>> x = torch.zeros(1, 2, 4, 4, requires_grad=True)
        >>> partial_bce(x, torch.ones(1, 2, 4, 4), torch.tensor([[1.0, 0.0]])).item() > 0
        True
    """
    mask = labeled.to(logits.dtype)
    if mask.ndim == 2:
        mask = mask[:, :, None, None]
    mask = mask.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return (bce * mask).sum() / mask.sum().clamp_min(1.0)


def partial_dice(
    logits: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor, *, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss per organ channel over the whole batch, on known pixels only.

    Channels with no known pixel in the batch are left out (no loss, no gradient).

    Args:
        logits: ``(B, organs, H, W)`` raw outputs (sigmoid is applied here).
        target: Same shape, organ masks.
        labeled: ``(B, organs)`` or ``(B, organs, H, W)`` mask of known channels/pixels.
        smooth: Additive smoothing of numerator and denominator.

    Returns:
        Scalar ``1 - mean Dice`` over channels with known pixels.
    """
    mask = labeled.to(logits.dtype)
    if mask.ndim == 2:
        mask = mask[:, :, None, None]
    mask = mask.expand_as(logits)
    prob = torch.sigmoid(logits) * mask
    tgt = target.to(logits.dtype) * mask
    dims = (0, 2, 3)
    inter = (prob * tgt).sum(dims)
    denom = prob.sum(dims) + tgt.sum(dims)
    present = mask.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1 - dice[present].mean()


def supervised_loss(
    logits: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor, *, dice: bool
) -> torch.Tensor:
    """:func:`partial_bce`, plus :func:`partial_dice` when ``dice`` is true."""
    loss = partial_bce(logits, target, labeled)
    if dice:
        loss = loss + partial_dice(logits, target, labeled)
    return loss


def with_exclusion(target: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """The known pixels of each channel once organs are taken to exclude each other.

    Where a sample's ground truth puts one of its labeled organs, every other organ is known
    to be absent, also the organs its dataset does not label (whose channels are otherwise
    unknown there): organs do not overlap. The partial loss then also teaches those channels
    "not here" on the labeled organ's pixels (the exclusion of Shi et al., MedIA 2021).

    Args:
        target: ``(B, organs, H, W)`` partial labels (1 organ, 0 background or unknown).
        labeled: ``(B, organs)`` or ``(B, organs, H, W)`` mask of known channels/pixels.

    Returns:
        ``(B, organs, H, W)`` float mask of known pixels, for :func:`supervised_loss`.

    Example:
        >>> y = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])  # organ 1 on the first pixel
        >>> with_exclusion(y, torch.tensor([[1.0, 0.0]]))[0, 1].flatten().tolist()
        [1.0, 0.0]
    """
    mask = labeled.to(target.dtype)
    if mask.ndim == 2:
        mask = mask[:, :, None, None]
    mask = mask.expand_as(target)
    organ_here = ((target > 0.5) & (mask > 0.5)).any(dim=1, keepdim=True)
    return torch.maximum(mask, organ_here.to(target.dtype).expand_as(target))
