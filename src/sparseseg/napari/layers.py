"""Between sparseseg volumes ``[i, j, k]`` and napari layers.

napari's first axis is the slider and its last two are the screen's rows and columns. Layers
hold a volume as ``(k, j, i)``: the slider runs through sparseseg's slices (the third voxel
axis, :data:`sparseseg.io.axes.SLICE_AXIS`), ``j`` runs down the screen and ``i`` across it,
which shows an axial slice of an LPS volume in the radiological convention (the patient's
right on the screen's left, anterior at the top). The layer's ``scale`` is the spacing in the
same order; the full geometry (spacing, origin, direction, file) travels in the layer's
``metadata`` so that a label map saved from the viewer lies on the image's voxel grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sparseseg.io.axes import SLICE_AXIS
from sparseseg.io.formats import split_extension
from sparseseg.io.volume import Volume

DISPLAY_AXES: tuple[int, int, int] = (
    SLICE_AXIS,
    *sorted((a for a in range(3) if a != SLICE_AXIS), reverse=True),
)
"""Voxel axis shown on each napari axis: ``(2, 1, 0)``, that is ``(k, j, i)``."""

SLIDER_AXIS = 0
"""The napari axis that runs through sparseseg's slices."""

GEOMETRY_KEY = "sparseseg_geometry"
"""Key of the geometry in a layer's ``metadata``."""

LayerData = tuple[np.ndarray, dict[str, Any], str]
"""napari's ``(data, keyword arguments, layer type)``."""


def to_display(array: np.ndarray) -> np.ndarray:
    """A volume's array ``[i, j, k]`` in layer order ``(k, j, i)``, contiguous.

    Example:
        >>> to_display(np.zeros((4, 5, 6))).shape
        (6, 5, 4)
    """
    return np.ascontiguousarray(np.transpose(array, DISPLAY_AXES))


def from_display(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: a layer's data back to ``[i, j, k]``, contiguous."""
    return np.ascontiguousarray(np.transpose(np.asarray(data), np.argsort(DISPLAY_AXES)))


def display_scale(spacing: tuple[float, ...]) -> tuple[float, ...]:
    """The layer ``scale`` of a volume with this voxel ``spacing`` (mm)."""
    return tuple(float(spacing[a]) for a in DISPLAY_AXES)


def geometry_metadata(volume: Volume) -> dict[str, Any]:
    """A volume's geometry as plain values, for a layer's ``metadata``."""
    return {
        GEOMETRY_KEY: {
            "spacing": [float(s) for s in volume.spacing],
            "origin": [float(o) for o in volume.origin],
            "direction": np.asarray(volume.direction, float).tolist(),
            "path": None if volume.path is None else str(volume.path),
        }
    }


def image_layer_data(volume: Volume, *, name: str | None = None) -> LayerData:
    """napari layer data of an image volume (scale from its spacing, geometry kept)."""
    return (
        to_display(volume.array),
        {"name": name or layer_name(volume), "scale": display_scale(volume.spacing),
         "metadata": geometry_metadata(volume)},
        "image",
    )


def labels_layer_data(volume: Volume, *, name: str | None = None) -> LayerData:
    """napari layer data of a label volume (scale from its spacing, geometry kept)."""
    return (
        to_display(volume.array),
        {"name": name or layer_name(volume), "scale": display_scale(volume.spacing),
         "metadata": geometry_metadata(volume)},
        "labels",
    )


def layer_name(volume: Volume) -> str:
    """A layer name for a volume: its file name without extension."""
    if volume.path is None:
        return "volume"
    return split_extension(Path(volume.path))[0] or Path(volume.path).name


def layer_geometry(
    scale: tuple[float, ...], metadata: dict
) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray, Path | None]:
    """A layer's ``(spacing, origin, direction, source path)`` in sparseseg's voxel order.

    A layer without sparseseg geometry (added from an array, read by another reader) gets its
    spacing from its ``scale``, origin 0 and identity direction.

    Args:
        scale: The layer's ``scale``.
        metadata: The layer's ``metadata``.
    """
    geometry = (metadata or {}).get(GEOMETRY_KEY)
    if not geometry:
        spacing = tuple(float(scale[DISPLAY_AXES.index(a)]) for a in range(3))
        return spacing, (0.0, 0.0, 0.0), np.eye(3), None
    path = geometry.get("path")
    return (
        tuple(float(s) for s in geometry["spacing"]),
        tuple(float(o) for o in geometry["origin"]),
        np.asarray(geometry["direction"], float),
        None if path is None else Path(path),
    )


def layer_volume(data: np.ndarray, scale: tuple[float, ...], metadata: dict) -> Volume:
    """The sparseseg volume of a layer: its data back in ``[i, j, k]`` and its geometry.

    Args:
        data: The layer's data, ``(k, j, i)``.
        scale: The layer's ``scale``.
        metadata: The layer's ``metadata`` (see :func:`layer_geometry`).
    """
    spacing, origin, direction, path = layer_geometry(scale, metadata)
    return Volume(from_display(data), spacing, origin, direction, path)


def layer_source(metadata: dict) -> Path | None:
    """The file or folder a layer was read from, when sparseseg read it."""
    geometry = (metadata or {}).get(GEOMETRY_KEY) or {}
    path = geometry.get("path")
    return None if path is None else Path(path)


def label_dtype(array: np.ndarray) -> np.dtype:
    """The smallest of ``uint8``, ``int16``, ``int32`` that holds a label array's values."""
    top = int(np.max(array)) if np.size(array) else 0
    return np.dtype(np.uint8 if top < 256 else (np.int16 if top < 32768 else np.int32))
