"""Intensity normalisation and resizing shared by training and inference.

Intensities are clipped to the volume's own 0.5-99.5 percentiles (over voxels above the 0.5th
percentile, so a CT's air or an MRI's empty background does not dominate) and scaled to
``[0, 1]``. That treats CT in Hounsfield units and MRI of any scale alike, with no window to
choose. Slices are resized to ``size x size`` for the network; results go back to the native
grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.io.axes import SLICE_AXIS, to_slices


def normalise_intensity(array: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip to the volume's percentiles and scale to ``[0, 1]`` (float32).

    Args:
        array: Any-scale image.
        low: Lower percentile.
        high: Upper percentile.
    """
    arr = np.asarray(array, np.float32)
    finite_mask = np.isfinite(arr)
    all_finite = bool(finite_mask.all())  # the usual case: no copy of the finite voxels
    finite = arr.ravel() if all_finite else arr[finite_mask]
    if finite.size == 0:
        return np.zeros_like(arr)
    sample = finite if finite.size <= 2_000_000 else finite[:: finite.size // 2_000_000 + 1]
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    # Percentiles of the foreground only: air in CT or empty MRI background would otherwise
    # squeeze every tissue into a narrow band.
    foreground = sample[sample > lo + 0.05 * (hi - lo)]
    if foreground.size > 0.05 * sample.size:
        lo, hi = (float(v) for v in np.percentile(foreground, [low, high]))
    if hi - lo < 1e-6:  # a constant volume
        return np.zeros_like(arr)
    out = np.subtract(arr if all_finite else np.nan_to_num(arr, nan=lo), lo, dtype=np.float32)
    np.divide(out, hi - lo, out=out)
    return np.clip(out, 0.0, 1.0, out=out)


def volume_to_slices(array: np.ndarray, *, size: int, axis: int = SLICE_AXIS) -> torch.Tensor:
    """Normalise a volume and return its slices resized for the network: ``(N, 1, S, S)``."""
    slices = torch.from_numpy(np.ascontiguousarray(to_slices(normalise_intensity(array), axis)))
    return resize_slices(slices[:, None], size)


def resize_slices(slices: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` slices (no-op when already that size)."""
    target = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(slices.shape[-2:]) == target:
        return slices
    return F.interpolate(slices, size=target, mode="bilinear", align_corners=False)
