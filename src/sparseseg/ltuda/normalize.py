"""Intensity normalisation that works for CT in HU and MRI of any scale.

Each volume is clipped to its own 0.5th-99.5th percentiles (removing air/metal extremes in CT
and bright outliers in MRI), then z-scored with the mean and standard deviation of the clipped
volume. No modality-specific window is assumed, so CT, MRI and pre-normalised data all map to
comparable ranges.
"""

from __future__ import annotations

import numpy as np


def normalize_intensity(
    array: np.ndarray, *, low: float = 0.5, high: float = 99.5
) -> np.ndarray:
    """Percentile-clip then z-score a volume.

    Args:
        array: Image voxels, any numeric dtype and scale.
        low: Lower percentile of the clip.
        high: Upper percentile of the clip.

    Returns:
        float32 array of the same shape (all zeros for a constant volume).

    Example:
        >>> out = normalize_intensity(np.arange(1000.0))
        >>> round(float(out.mean()), 6), round(float(out.std()), 3)
        (0.0, 1.0)
    """
    data = np.asarray(array, dtype=np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, np.float32)
    lo, hi = np.percentile(finite, [low, high])
    data = np.clip(np.nan_to_num(data, nan=lo), lo, hi)
    std = float(data.std())
    if std < 1e-8:
        return np.zeros(data.shape, np.float32)
    return ((data - data.mean()) / std).astype(np.float32)
