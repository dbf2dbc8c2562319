"""Find the single annotated slice in what a clinician saved from her viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS, slice_shape, to_slices
from sparseseg.io.reader import read_label
from sparseseg.io.volume import Volume


def annotated_slice(
    annotation: Volume,
    image: Volume,
    *,
    index: int | None = None,
    axis: int = SLICE_AXIS,
) -> tuple[int, np.ndarray]:
    """Return ``(slice index, 2D label)`` from an annotation volume or slice.

    Args:
        annotation: Either a label volume on the image's grid with exactly one non-empty
            slice (what ITK-SNAP or 3D Slicer save when one slice is drawn), or a 2D label
            image of the slice's shape (then ``index`` is required).
        image: The image the annotation belongs to.
        index: Slice index, required for a 2D annotation; for a 3D one it must match.
        axis: Slice axis.

    Raises:
        InputError: No labeled slice, several labeled slices, shape or geometry mismatch,
            index outside the volume, or a 2D annotation without an index.
    """
    path = annotation.path
    n = image.shape[axis]
    plane = slice_shape(image.shape, axis)
    if index is not None and not 0 <= index < n:
        raise InputError(f"slice index {index} is outside the volume (0..{n - 1})", path)
    arr = annotation.array
    if arr.ndim == 3 and arr.shape[axis] == 1 and arr.shape != image.shape:
        arr = np.take(arr, 0, axis=axis)  # a one-slice volume is a 2D annotation
    if arr.ndim == 2:
        if index is None:
            raise InputError("is a 2D annotation; give its slice index with --slice", path)
        if arr.shape != plane:
            raise InputError(
                f"2D annotation shape {arr.shape} differs from slice shape {plane}", path
            )
        if not arr.any():
            raise InputError("annotation slice holds no label", path)
        return index, arr
    if arr.shape != image.shape:
        raise InputError(f"shape {arr.shape} differs from image shape {image.shape}", path)
    if not annotation.same_geometry(image):
        raise InputError("geometry (spacing/origin/direction) differs from the image", path)
    labeled = np.flatnonzero(to_slices(arr, axis).reshape(n, -1).any(axis=1))
    if labeled.size == 0:
        raise InputError("annotation holds no labeled slice", path)
    if labeled.size > 1:
        shown = ", ".join(str(i) for i in labeled[:5]) + (" ..." if labeled.size > 5 else "")
        raise InputError(
            f"labels on {labeled.size} slices ({shown}); annotate exactly one slice", path
        )
    found = int(labeled[0])
    if index is not None and index != found:
        raise InputError(f"--slice {index} given, but the labeled slice is {found}", path)
    return found, np.ascontiguousarray(to_slices(arr, axis)[found])


def read_annotation(
    path: str | Path, image: Volume, *, index: int | None = None
) -> tuple[int, np.ndarray]:
    """Read an annotation file and return its slice index and 2D labels."""
    return annotated_slice(read_label(path, ndim=None), image, index=index)
