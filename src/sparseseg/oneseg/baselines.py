"""Propagators that need no training: chained registration and plain copy.

They share OneSeg's driver (:func:`~sparseseg.oneseg.propagation.propagate_annotation`): same
directions, fusion between annotated slices, stop rule and clean-up, so comparisons isolate
the slice-to-slice step. Their steps give hard labels, so their probabilities are one-hot.

* ``registration``: 2D symmetric-forces demons (SimpleITK) registers each next slice to the
  current one; the current labels are warped with the displacement field (nearest neighbour).
* ``copy``: the current labels are copied unchanged to the next slice (with verification on,
  the intensity check is what stops it).

``interpolation`` (:mod:`sparseseg.oneseg.interpolation`) is not a propagator: it fills the
slices between annotated ones by morphological contour interpolation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sparseseg.io.axes import SLICE_AXIS, to_slices
from sparseseg.oneseg.preprocess import normalise_intensity
from sparseseg.oneseg.propagation import Propagator, one_hot

if TYPE_CHECKING:  # SimpleITK is imported where it is used (a faster start)
    import SimpleITK as sitk

METHODS = ("oneseg", "registration", "copy", "interpolation")
"""Every way ``propagate`` can fill a volume from annotated slices."""

PROPAGATORS = ("oneseg", "registration", "copy")
"""The methods that propagate slice by slice (and so can suggest a next slice)."""


class HardPropagator(Propagator):
    """A propagator whose step returns hard labels (probabilities are their one-hot)."""

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """One-hot of the labels."""
        return one_hot(scores, self.classes)


class RegistrationPropagator(HardPropagator):
    """Demons registration between neighbouring slices, labels warped by nearest neighbour.

    Args:
        image: The volume.
        iterations: Demons iterations per slice pair.
        smoothing: Standard deviation (pixels) of the displacement field's smoothing.
        axis: Slice axis.
    """

    def __init__(self, image: np.ndarray, *, iterations: int = 50, smoothing: float = 1.5,
                 axis: int = SLICE_AXIS) -> None:
        self.slices = to_slices(normalise_intensity(image), axis)
        self.iterations = iterations
        self.smoothing = smoothing

    @staticmethod
    def _image(arr: np.ndarray) -> sitk.Image:
        import SimpleITK as sitk
        return sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))

    def scores(self, k: int, nxt: int, current: np.ndarray, *, start: int) -> np.ndarray:
        """``current`` warped onto slice ``nxt``."""
        import SimpleITK as sitk
        fixed, moving = self._image(self.slices[nxt]), self._image(self.slices[k])
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(self.iterations)
        demons.SetStandardDeviations(self.smoothing)
        field = demons.Execute(fixed, moving)
        transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
        label = sitk.GetImageFromArray(np.ascontiguousarray(current.astype(np.int32)))
        warped = sitk.Resample(label, fixed, transform, sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(warped)


class CopyPropagator(HardPropagator):
    """The trivial propagator: the next slice gets the current labels (unchanged: the
    intensity decision is not applied)."""

    intensity_decision = False

    def scores(self, k: int, nxt: int, current: np.ndarray, *, start: int) -> np.ndarray:
        """``current`` unchanged."""
        return current.copy()


def baseline_propagator(method: str, image: np.ndarray, *, axis: int = SLICE_AXIS
                        ) -> Propagator:
    """The propagator of a training-free method: ``registration`` or ``copy``."""
    if method == "registration":
        return RegistrationPropagator(image, axis=axis)
    if method == "copy":
        return CopyPropagator()
    raise ValueError(f"unknown baseline {method!r} (registration or copy)")
