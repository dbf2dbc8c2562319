"""Planes of a 3D volume as shown on screen: extraction, display flips, spacing, resampling.

An axial plane (fixed ``k``, the slice axis) shows ``i`` across and ``j`` down; a coronal plane
(fixed ``j``) and a sagittal plane (fixed ``i``) show ``k`` upwards. :func:`display_flips`
turns a direction matrix into the axes to reverse for the radiological convention, and
:func:`display_size` / :func:`resize_indices` resample a plane to its physical aspect
(nearest neighbour).

Example:
    >>> import numpy as np
    >>> plane(np.arange(8).reshape(2, 2, 2), "axial", 0).tolist()
    [[0, 4], [2, 6]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VIEWS = ("axial", "coronal", "sagittal")
"""Plane names: axial fixes the slice axis ``k``, coronal fixes ``j``, sagittal fixes ``i``."""

Flips = tuple[bool, bool, bool]
NO_FLIPS: Flips = (False, False, False)


def display_flips(direction: np.ndarray | None) -> Flips:
    """Which voxel axes to reverse so planes show in the radiological convention.

    Targets (LPS world coordinates, as SimpleITK reads them): ``i`` towards the patient's left
    (so the patient's right is on the viewer's left), ``j`` towards posterior (anterior up) and
    ``k`` towards superior. An axis is reversed only when it runs mainly along its own world
    axis, backwards; oblique or permuted volumes are shown in voxel axes.

    Args:
        direction: ``3 x 3`` matrix whose columns are the world directions of the voxel axes,
            or ``None`` (no flips).

    Example:
        >>> display_flips(np.diag([-1.0, -1.0, 1.0]))
        (True, True, False)
    """
    if direction is None:
        return NO_FLIPS
    d = np.asarray(direction, float)
    if d.shape != (3, 3):
        return NO_FLIPS
    flips = []
    for axis in range(3):
        column = np.abs(d[:, axis])
        own = column[axis] >= column.max() - 1e-6 and column[axis] > 0.5
        flips.append(bool(own and d[axis, axis] < 0))
    return flips[0], flips[1], flips[2]


def plane(volume: np.ndarray, view: str, index: int, flips: Flips = NO_FLIPS) -> np.ndarray:
    """The 2D plane ``index`` of a 3D ``[i, j, k]`` array, oriented for display (rows, cols).

    Args:
        volume: 3D array.
        view: ``axial``, ``coronal`` or ``sagittal``.
        index: Voxel index along the fixed axis.
        flips: Voxel axes to reverse on screen (:func:`display_flips`).
    """
    fi, fj, fk = flips
    if view == "axial":
        out = volume[:, :, index].T
        rows_flip, cols_flip = fj, fi
    elif view == "coronal":
        out = volume[:, index, :].T[::-1]
        rows_flip, cols_flip = fk, fi
    elif view == "sagittal":
        out = volume[index, :, :].T[::-1]
        rows_flip, cols_flip = fk, fj
    else:
        raise ValueError(f"unknown view {view!r} ({', '.join(VIEWS)})")
    if rows_flip:
        out = out[::-1]
    if cols_flip:
        out = out[:, ::-1]
    return out


def slice_row(n_slices: int, k: int, flips: Flips = NO_FLIPS) -> int:
    """Row of a coronal or sagittal plane (before resampling) that shows axial slice ``k``."""
    return int(k) if flips[2] else n_slices - 1 - int(k)


def plane_spacing(spacing: Sequence[float], view: str) -> tuple[float, float]:
    """Pixel size (row, column) in mm of a plane from :func:`plane`."""
    si, sj, sk = (float(s) for s in spacing)
    return {"axial": (sj, si), "coronal": (sk, si), "sagittal": (sk, sj)}[view]


def display_size(shape: tuple[int, int], spacing: tuple[float, float],
                 panel_px: int, min_ratio: float = 0.25) -> tuple[int, int]:
    """Pixel size ``(H, W)`` of a plane whose longer physical side becomes ``panel_px``.

    The shorter side keeps the physical proportion but is stretched to at least
    ``min_ratio * panel_px`` (a coronal plane through 20 slices of a wide MR stays readable).
    """
    height_mm, width_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    scale = panel_px / max(height_mm, width_mm, 1e-9)
    shortest = max(1, round(min_ratio * panel_px))
    return (max(shortest, round(height_mm * scale)), max(shortest, round(width_mm * scale)))


def resize_indices(n_in: int, n_out: int) -> np.ndarray:
    """Nearest-neighbour source index of each of ``n_out`` pixels along an axis of ``n_in``."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)
