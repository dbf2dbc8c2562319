"""A voxel array together with its physical geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Diagonal that flips ITK's LPS world coordinates to NIfTI's RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D (or 2D) image or label map with its geometry.

    The array is indexed like the file's voxels, ``array[i, j, k]``. Geometry follows ITK's
    convention: world point (LPS, mm) of voxel index ``v`` is
    ``origin + direction @ (spacing * v)``.

    Args:
        array: Voxel values, indexed ``[i, j, k]``.
        spacing: Voxel size in mm along each voxel axis.
        origin: World position (LPS, mm) of voxel ``(0, 0, 0)``.
        direction: Columns are the world directions of the voxel axes.
        path: File or folder it was read from, if any.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray
    path: Path | None = field(default=None, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the voxel array."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of voxel axes."""
        return self.array.ndim

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix in RAS (NIfTI/nibabel convention), for 3D volumes."""
        if self.ndim != 3:
            raise ValueError("affine is defined for 3D volumes only")
        lin = _LPS_TO_RAS @ np.asarray(self.direction, float) @ np.diag(self.spacing)
        aff = np.eye(4)
        aff[:3, :3] = lin
        aff[:3, 3] = _LPS_TO_RAS @ np.asarray(self.origin, float)
        return aff

    def world_coordinates(self, index: np.ndarray) -> np.ndarray:
        """World (LPS, mm) coordinates of voxel indices.

        Args:
            index: Array of shape ``(N, ndim)`` with voxel indices.

        Returns:
            Array of shape ``(N, ndim)``.
        """
        index = np.asarray(index, float)
        lin = np.asarray(self.direction, float) @ np.diag(self.spacing)
        return index @ lin.T + np.asarray(self.origin, float)

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and another array of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy(), self.path)

    def same_geometry(self, other: Volume, *, tolerance: float = 1e-3) -> bool:
        """Whether ``other`` lies on the same voxel grid in world space."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )
