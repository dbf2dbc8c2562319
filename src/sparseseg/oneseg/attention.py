"""Local attention soft-copy: the reconstruction module (OneSeg Eq. 8-9).

For each target pixel ``i`` the weights ``A_ij = softmax_j(<q_i, k_j> / T)`` run over the
reference pixels ``j`` in a ``P x P`` window around ``i``; the output is
``sum_j A_ij * v_j``. The same module copies intensities in training and one-hot labels at test.
Window offsets that fall outside the image get ``-inf`` (they take no weight), not zero padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _window_valid(h: int, w: int, radius: int, device: torch.device) -> torch.Tensor:
    """``(1, P*P, H*W)`` mask, True where the window offset lands inside the image."""
    ones = torch.ones(1, 1, h, w, device=device)
    return F.unfold(ones, 2 * radius + 1, padding=radius) > 0.5


def local_attention_weights(
    query: torch.Tensor, key: torch.Tensor, *, radius: int, temperature: float = 1.0
) -> torch.Tensor:
    """Attention weights of each target pixel over its reference window.

    Args:
        query: Target features ``(B, C, H, W)``.
        key: Reference features ``(B, C, H, W)``.
        radius: Window radius; ``P = 2 * radius + 1``.
        temperature: Divides the dot products before the softmax.

    Returns:
        ``(B, P*P, H*W)`` weights summing to 1 over the window axis.
    """
    b, c, h, w = query.shape
    p2 = (2 * radius + 1) ** 2
    k = F.unfold(key, 2 * radius + 1, padding=radius).view(b, c, p2, h * w)
    logits = torch.einsum("bcn,bcpn->bpn", query.reshape(b, c, h * w), k) / temperature
    valid = _window_valid(h, w, radius, query.device)
    logits = logits.masked_fill(~valid, float("-inf"))
    return torch.softmax(logits, dim=1)


def soft_copy(weights: torch.Tensor, values: torch.Tensor, *, radius: int) -> torch.Tensor:
    """Apply attention weights to reference values: ``(B, D, H, W)`` -> ``(B, D, H, W)``."""
    b, d, h, w = values.shape
    p2 = (2 * radius + 1) ** 2
    v = F.unfold(values, 2 * radius + 1, padding=radius).view(b, d, p2, h * w)
    return torch.einsum("bpn,bdpn->bdn", weights, v).view(b, d, h, w)


class LocalAttentionCopy(nn.Module):
    """Reconstruct a target slice from a reference by local attention.

    Args:
        radius: Window radius (``P = 2 * radius + 1``; OneSeg/CorrFlow use P = 13).
        temperature: Softmax temperature.

    Example:
        >>> copy = LocalAttentionCopy(radius=6)
        >>> out = copy(q, k, v)  # doctest: +SKIP
    """

    def __init__(self, *, radius: int = 6, temperature: float = 1.0) -> None:
        super().__init__()
        self.radius = radius
        self.temperature = temperature

    def forward(self, query: torch.Tensor, key: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Copy ``values`` (on the reference grid) onto the target grid."""
        weights = local_attention_weights(
            query, key, radius=self.radius, temperature=self.temperature
        )
        return soft_copy(weights, values, radius=self.radius)
