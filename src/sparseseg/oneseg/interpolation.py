"""Morphological contour interpolation between annotated slices (no image, no training).

The method of 3D Slicer's "Fill between slices" and ITK-SNAP: ITK's
``MorphologicalContourInterpolator`` (Albu et al. 2008; Zukic et al., Insight Journal 2016),
run through its WebAssembly build (``itkwasm-morphological-contour-interpolation``, the same
ITK filter, compiled once per process; SimpleITK's wheels do not include this ITK module). Each
label is interpolated between the slices it is drawn on, along the slice axis only; nothing is
extrapolated beyond a label's outermost slices, so a label drawn on one slice stays there.
"""

from __future__ import annotations

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS
from sparseseg.oneseg.annotation import SliceAnnotation


def interpolate(annotation: SliceAnnotation, *, axis: int = SLICE_AXIS) -> np.ndarray:
    """Fill the slices between annotated ones by morphological contour interpolation.

    Args:
        annotation: The annotated slices; each label needs at least two on which it is
            drawn (a slice annotated empty is emptied, nothing fades out toward it).
        axis: Slice axis.

    Returns:
        Label volume indexed like the image, annotated slices kept exactly.

    Raises:
        InputError: A label drawn on fewer than two slices (nothing to interpolate).
    """
    import itkwasm
    from itkwasm_morphological_contour_interpolation import morphological_contour_interpolation

    single = [v for v in annotation.labels() if len(annotation.drawn_slices(v)) < 2]
    if single:
        raise InputError(
            f"interpolation needs each label on at least 2 annotated slices; label(s) "
            f"{', '.join(map(str, single))} on 1 (use --method oneseg or registration)"
        )
    volume = annotation.volume(axis)
    dtype = volume.dtype
    # itk-wasm takes arrays in (z, y, x) order: slices first, then the in-plane axes.
    stack = np.ascontiguousarray(np.moveaxis(volume, axis, 0).transpose(0, 2, 1)
                                 .astype(np.uint16 if dtype.itemsize > 1 else np.uint8))
    image = itkwasm.image_from_array(stack)
    filled = morphological_contour_interpolation(image, axis=2)
    out = np.asarray(filled.data).reshape(stack.shape).transpose(0, 2, 1)
    out = np.moveaxis(out, 0, axis).astype(dtype, copy=True)
    annotation.restore(np.moveaxis(out, axis, 0))
    return out
