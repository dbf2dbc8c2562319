"""Propagators that need no training: chained registration and plain copy.

They share OneSeg's driver (:func:`~sparseseg.oneseg.propagation.chain_propagate`): same
directions, stop rule and clean-up, so comparisons isolate the slice-to-slice step.

* ``registration``: 2D symmetric-forces demons (SimpleITK) registers each next slice to the
  current one; the current labels are warped with the displacement field (nearest neighbour).
* ``copy``: the current labels are copied unchanged to the next slice (with verification on,
  the intensity check is what stops it).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from sparseseg.io.axes import SLICE_AXIS, to_slices
from sparseseg.oneseg.preprocess import normalise_intensity
from sparseseg.oneseg.propagation import StepFunction

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


def baseline_step(method: str, image: np.ndarray, *, axis: int = SLICE_AXIS) -> StepFunction:
    """The step function of a training-free propagator: ``registration`` or ``copy``."""
    if method == "registration":
        return registration_step(image, axis=axis)
    if method == "copy":
        return copy_step()
    raise ValueError(f"unknown baseline {method!r} (registration or copy)")
