"""Propagators that need no training: chained registration and plain copy.

They share OneSeg's driver (:func:`~sparseseg.oneseg.propagation.chain_propagate`): same
directions, stop rule and clean-up, so comparisons isolate the slice-to-slice step.

* ``registration``: 2D symmetric-forces demons (SimpleITK) registers each next slice to the
  current one; the current labels are warped with the displacement field (nearest neighbour).
* ``copy``: the current labels are copied unchanged to the next slice (with verification on,
  the intensity check is what stops it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

from sparseseg.io.axes import SLICE_AXIS, to_slices
from sparseseg.oneseg.preprocess import normalise_intensity
from sparseseg.oneseg.propagation import StepFunction, chain_propagate

METHODS = ("oneseg", "registration", "copy")


def registration_step(
    image: np.ndarray, *, iterations: int = 50, smoothing: float = 1.5, axis: int = SLICE_AXIS
) -> StepFunction:
    """Demons registration between neighbouring slices, labels warped by nearest neighbour."""
    slices = to_slices(normalise_intensity(image), axis)

    def as_image(arr: np.ndarray) -> sitk.Image:
        return sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))

    def step(k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        fixed, moving = as_image(slices[nxt]), as_image(slices[k])
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(iterations)
        demons.SetStandardDeviations(smoothing)
        field = demons.Execute(fixed, moving)
        transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
        label = sitk.GetImageFromArray(np.ascontiguousarray(current.astype(np.int32)))
        warped = sitk.Resample(label, fixed, transform, sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(warped)

    return step


def copy_step() -> StepFunction:
    """The trivial propagator: the next slice gets the current labels."""

    def step(k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        return current.copy()

    return step


def propagate_baseline(
    method: str,
    image: np.ndarray,
    annotation: np.ndarray,
    index: int,
    *,
    verify: bool = False,
    keep_largest: bool = True,
    axis: int = SLICE_AXIS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Propagate with ``registration`` or ``copy``; see ``chain_propagate`` for the rest."""
    if method == "registration":
        step = registration_step(image, axis=axis)
    elif method == "copy":
        step = copy_step()
    else:
        raise ValueError(f"unknown baseline {method!r} (registration or copy)")
    return chain_propagate(
        image,
        annotation,
        index,
        step,
        verify=verify,
        keep_largest=keep_largest,
        axis=axis,
        progress=progress,
    )
