"""Local attention soft-copy: the reconstruction module (OneSeg Eq. 8-9).

For each target pixel ``i`` the weights ``A_ij = softmax_j(<q_i, k_j> / T)`` run over the
reference pixels ``j`` in a ``P x P`` window around ``i``; the output is
``sum_j A_ij * v_j``. The same module copies intensities in training and one-hot labels at test.
Window offsets that fall outside the image get ``-inf`` (they take no weight), not zero padding.

Several references can be copied from at once (:func:`multi_reference_copy`): the softmax then
runs over the windows of all of them together, so each target pixel takes its value from
whichever reference pixels match it best. Propagation uses this to copy from the last
propagated slice and from the annotated slice itself.

Two vectorised implementations give the same result. For small feature maps (up to
:data:`DENSE_MAX_PIXELS` pixels) all pairwise dot products are one batched matrix product and
pixels outside the window are masked with ``-inf``; on a CPU that is several times faster than
gathering windows. Larger maps gather each pixel's window with ``unfold``, whose memory grows
with the window instead of with the square of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

DENSE_MAX_PIXELS = 2304
"""Largest ``H * W`` handled by the dense path (48 x 48)."""


def _window_mask(h: int, w: int, radius: int, device: torch.device) -> torch.Tensor:
    """``(H*W, H*W)`` mask, True where pixel ``j`` lies in the window of pixel ``i``."""
    ii, jj = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    return ((ii[:, None] - ii[None, :]).abs() <= radius) & (
        (jj[:, None] - jj[None, :]).abs() <= radius
    )


@lru_cache(maxsize=8)
def _window_bias(h: int, w: int, radius: int, references: int, device: torch.device
                 ) -> torch.Tensor:
    """``(H*W, references * H*W)`` additive mask: 0 where reference pixel ``j`` lies in the
    window of target pixel ``i``, ``-inf`` elsewhere (cached: propagation asks for the same
    one at every step)."""
    inside = _window_mask(h, w, radius, device)
    bias = torch.zeros(inside.shape, device=device).masked_fill_(~inside, float("-inf"))
    return bias.repeat(1, references)


def _dense_copy(
    query: torch.Tensor,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    *,
    radius: int,
    temperature: float,
) -> torch.Tensor:
    """All pairwise dot products with every reference, masked to the windows, one softmax."""
    b, c, h, w = query.shape
    n, d = h * w, values[0].shape[1]
    q = query.reshape(b, c, n).transpose(1, 2)
    k = torch.cat([k.reshape(b, c, n) for k in keys], dim=2)  # (B, C, M * reference)
    bias = _window_bias(h, w, radius, len(keys), query.device)
    logits = torch.baddbmm(bias, q, k, alpha=1.0 / temperature)  # (B, target, M * reference)
    weights = torch.softmax(logits, dim=2)
    v = torch.cat([v.reshape(b, d, n) for v in values], dim=2)  # (B, D, M * reference)
    return torch.bmm(v, weights.transpose(1, 2)).view(b, d, h, w)


def dense_local_copy(
    query: torch.Tensor,
    key: torch.Tensor,
    values: torch.Tensor,
    *,
    radius: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Local attention copy by one masked matrix product (small feature maps).

    Args:
        query: Target features ``(B, C, H, W)``.
        key: Reference features ``(B, C, H, W)``.
        values: Reference values ``(B, D, H, W)``.
        radius: Window radius.
        temperature: Softmax temperature.

    Returns:
        ``(B, D, H, W)``.
    """
    return _dense_copy(query, [key], [values], radius=radius, temperature=temperature)


def _window_valid(h: int, w: int, radius: int, device: torch.device) -> torch.Tensor:
    """``(1, P*P, H*W)`` mask, True where the window offset lands inside the image."""
    ones = torch.ones(1, 1, h, w, device=device)
    return F.unfold(ones, 2 * radius + 1, padding=radius) > 0.5


def _window_logits(
    query: torch.Tensor, key: torch.Tensor, *, radius: int, temperature: float
) -> torch.Tensor:
    """``(B, P*P, H*W)`` scaled dot products over each target pixel's reference window,
    ``-inf`` where the window leaves the image."""
    b, c, h, w = query.shape
    p2 = (2 * radius + 1) ** 2
    k = F.unfold(key, 2 * radius + 1, padding=radius).view(b, c, p2, h * w)
    logits = torch.einsum("bcn,bcpn->bpn", query.reshape(b, c, h * w), k) / temperature
    valid = _window_valid(h, w, radius, query.device)
    return logits.masked_fill(~valid, float("-inf"))


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
    logits = _window_logits(query, key, radius=radius, temperature=temperature)
    return torch.softmax(logits, dim=1)


def soft_copy(weights: torch.Tensor, values: torch.Tensor, *, radius: int) -> torch.Tensor:
    """Apply attention weights to reference values: ``(B, D, H, W)`` -> ``(B, D, H, W)``."""
    b, d, h, w = values.shape
    p2 = (2 * radius + 1) ** 2
    v = F.unfold(values, 2 * radius + 1, padding=radius).view(b, d, p2, h * w)
    return torch.einsum("bpn,bdpn->bdn", weights, v).view(b, d, h, w)


def multi_reference_copy(
    query: torch.Tensor,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    *,
    radius: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Copy from several references with one softmax over all their windows.

    With one reference this is the plain local attention copy. With several, every target
    pixel weighs the ``P x P`` windows of all references together, so the output is one convex
    combination of all reference values.

    Args:
        query: Target features ``(B, C, H, W)``.
        keys: Reference features, each ``(B, C, H, W)``.
        values: Reference values, each ``(B, D, H, W)``, in the order of ``keys``.
        radius: Window radius.
        temperature: Softmax temperature.

    Returns:
        ``(B, D, H, W)``.
    """
    if len(keys) != len(values) or not keys:
        raise ValueError("need as many values as keys, and at least one reference")
    h, w = query.shape[-2:]
    if h * w <= DENSE_MAX_PIXELS:
        return _dense_copy(query, keys, values, radius=radius, temperature=temperature)
    logits = torch.cat(
        [_window_logits(query, k, radius=radius, temperature=temperature) for k in keys], dim=1
    )  # (B, M * P*P, H*W)
    weights = torch.softmax(logits, dim=1).chunk(len(keys), dim=1)
    return sum(soft_copy(wt, v, radius=radius) for wt, v in zip(weights, values, strict=True))


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
        return self.copy_from(query, [key], [values])

    def copy_from(
        self,
        query: torch.Tensor,
        keys: Sequence[torch.Tensor],
        values: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Copy from several references at once (:func:`multi_reference_copy`)."""
        return multi_reference_copy(
            query, keys, values, radius=self.radius, temperature=self.temperature
        )
