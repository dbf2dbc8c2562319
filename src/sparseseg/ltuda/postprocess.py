"""Post-processing: keep the largest 3D connected components of each organ."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage


def keep_largest_components(
    labels: np.ndarray, counts: Mapping[int, int] | None = None, *, default: int = 1
) -> np.ndarray:
    """Keep, for each label value, its ``counts[value]`` largest connected components.

    Args:
        labels: Integer label map (2D or 3D); 0 is background.
        counts: Components to keep per label value (e.g. ``{3: 2}`` for two kidneys); a
            value of 0 or less keeps everything.
        default: Count for label values not in ``counts``.

    Returns:
        A new label map; removed voxels become background.

    Example:
        >>> a = np.array([[1, 1, 0, 1]])
        >>> keep_largest_components(a).tolist()
        [[1, 1, 0, 0]]
    """
    counts = dict(counts or {})
    out = labels.copy()
    structure = ndimage.generate_binary_structure(labels.ndim, 1)
    for value in np.unique(labels):
        if value == 0:
            continue
        keep = int(counts.get(int(value), default))
        if keep <= 0:
            continue
        mask = labels == value
        comp, n = ndimage.label(mask, structure=structure)
        if n <= keep:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        kept = np.argsort(sizes)[::-1][:keep] + 1
        out[mask & ~np.isin(comp, kept)] = 0
    return out
