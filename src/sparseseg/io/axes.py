"""The one place that decides which voxel axis is the slice axis.

Arrays in sparseseg are indexed like the file's voxels, ``array[i, j, k]``. Slices are taken
along the third voxel axis ``k`` by default, which is the acquisition (usually axial) axis of a
standard CT or MR volume. Every module that works slice by slice goes through
:func:`to_slices` and :func:`from_slices`.
"""

from __future__ import annotations

import numpy as np

SLICE_AXIS = 2
"""Voxel axis along which volumes are cut into 2D slices."""


def slice_shape(shape: tuple[int, ...], axis: int = SLICE_AXIS) -> tuple[int, ...]:
    """In-plane shape of a volume's slices: ``shape`` without the slice axis.

    Example:
        >>> slice_shape((4, 5, 6))
        (4, 5)
    """
    return tuple(s for i, s in enumerate(shape) if i != axis)


def to_slices(array: np.ndarray, axis: int = SLICE_AXIS) -> np.ndarray:
    """Return a view of a 3D array with the slice axis first: ``(n_slices, H, W)``.

    Args:
        array: Volume indexed ``[i, j, k]``.
        axis: Voxel axis to slice along.

    Example:
        >>> to_slices(np.zeros((4, 5, 6))).shape
        (6, 4, 5)
    """
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    return np.moveaxis(array, axis, 0)


def from_slices(slices: np.ndarray, axis: int = SLICE_AXIS) -> np.ndarray:
    """Inverse of :func:`to_slices`: put the slice axis back where it belongs."""
    if slices.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {slices.shape}")
    return np.moveaxis(slices, 0, axis)
