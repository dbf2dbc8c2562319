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

Copying labels, most reference pixels are pure background. With ``background=`` the dense path
computes weights only for target pixels whose window reaches a labeled reference pixel (a box
around the labels, widened by the window): every other target pixel would get a convex
combination of pure-background values, which is pure background, and gets it directly. The
result is the same up to float rounding; propagating a left atrium that is half as much work.
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


Box = tuple[int, int, int, int]
"""``(row0, row1, col0, col1)``, ends excluded, in feature-map pixels."""


@lru_cache(maxsize=64)
def _box_bias(target: Box, reference: Box, radius: int, references: int,
              device: torch.device) -> torch.Tensor:
    """Like :func:`_window_bias`, from the pixels of a target box to those of a reference
    box."""
    tr, tc = torch.arange(*target[:2], device=device), torch.arange(*target[2:], device=device)
    rr = torch.arange(*reference[:2], device=device)
    rc = torch.arange(*reference[2:], device=device)
    rows = (tr[:, None] - rr[None, :]).abs() <= radius  # (target rows, reference rows)
    cols = (tc[:, None] - rc[None, :]).abs() <= radius
    inside = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(
        len(tr) * len(tc), len(rr) * len(rc))
    bias = torch.zeros(inside.shape, device=device).masked_fill_(~inside, float("-inf"))
    return bias.repeat(1, references)


def _label_box(values: Sequence[torch.Tensor], background: int, radius: int) -> Box | None:
    """Box of the target pixels whose window reaches a reference pixel that is not pure
    background (``None``: no such pixel)."""
    h, w = values[0].shape[-2:]
    labeled = torch.stack([(v[:, background] < 1).any(0) for v in values]).any(0)
    rows, cols = labeled.any(1).nonzero(), labeled.any(0).nonzero()
    if len(rows) == 0:
        return None
    return (max(int(rows[0]) - radius, 0), min(int(rows[-1]) + radius + 1, h),
            max(int(cols[0]) - radius, 0), min(int(cols[-1]) + radius + 1, w))


def _masked_copy(query: torch.Tensor, keys: Sequence[torch.Tensor],
                 values: Sequence[torch.Tensor], bias: torch.Tensor, temperature: float
                 ) -> torch.Tensor:
    """All pairwise dot products plus ``bias`` (the window mask), one softmax, one copy."""
    b, c, h, w = query.shape
    d = values[0].shape[1]
    q = query.reshape(b, c, h * w).transpose(1, 2)
    k = torch.cat([k.reshape(b, c, -1) for k in keys], dim=2)  # (B, C, M * reference)
    logits = torch.baddbmm(bias, q, k, alpha=1.0 / temperature)  # (B, target, M * reference)
    weights = torch.softmax(logits, dim=2)
    v = torch.cat([v.reshape(b, d, -1) for v in values], dim=2)  # (B, D, M * reference)
    return torch.bmm(v, weights.transpose(1, 2)).view(b, d, h, w)


def _dense_copy(
    query: torch.Tensor,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    *,
    radius: int,
    temperature: float,
    background: int | None = None,
) -> torch.Tensor:
    """All pairwise dot products with every reference, masked to the windows, one softmax
    (with ``background``: only for the target pixels near a label, see the module notes)."""
    b, _, h, w = query.shape
    whole = (0, h, 0, w)
    box = whole if background is None else _label_box(values, background, radius)
    if box == whole:
        bias = _window_bias(h, w, radius, len(keys), query.device)
        return _masked_copy(query, keys, values, bias, temperature)
    out = torch.zeros(b, values[0].shape[1], h, w, dtype=values[0].dtype, device=query.device)
    out[:, background] = 1.0
    if box is None:
        return out
    ref = (max(box[0] - radius, 0), min(box[1] + radius, h),
           max(box[2] - radius, 0), min(box[3] + radius, w))
    bias = _box_bias(box, ref, radius, len(keys), query.device)
    out[..., box[0]:box[1], box[2]:box[3]] = _masked_copy(
        query[..., box[0]:box[1], box[2]:box[3]],
        [k[..., ref[0]:ref[1], ref[2]:ref[3]] for k in keys],
        [v[..., ref[0]:ref[1], ref[2]:ref[3]] for v in values],
        bias, temperature)
    return out


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
    background: int | None = None,
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
        background: For one-hot label values, the background channel: target pixels whose
            windows hold only pure background get it without their weights being computed
            (same result up to float rounding; small maps only).

    Returns:
        ``(B, D, H, W)``.
    """
    if len(keys) != len(values) or not keys:
        raise ValueError("need as many values as keys, and at least one reference")
    h, w = query.shape[-2:]
    if h * w <= DENSE_MAX_PIXELS:
        return _dense_copy(query, keys, values, radius=radius, temperature=temperature,
                           background=background)
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
        *,
        background: int | None = None,
    ) -> torch.Tensor:
        """Copy from several references at once (:func:`multi_reference_copy`)."""
        return multi_reference_copy(
            query, keys, values, radius=self.radius, temperature=self.temperature,
            background=background,
        )
