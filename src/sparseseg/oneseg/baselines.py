"""Propagators that need no training: chained registration and plain copy.

They share OneSeg's driver (:func:`~sparseseg.oneseg.propagation.propagate_annotation`): same
directions, fusion between annotated slices, stop rule and clean-up, so comparisons isolate
the slice-to-slice step. Their steps give hard labels, so their probabilities are one-hot.

* ``registration``: 2D symmetric-forces demons (SimpleITK) registers each next slice to the
  current one; the current labels are warped with the displacement field (nearest neighbour).
  With ``soft=True`` (as :mod:`sparseseg.oneseg.hybrid` uses it) each label's one-hot channel
  is warped by linear interpolation instead, which gives class probabilities, and only a box
  around the current labels is registered.
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

METHODS = ("oneseg", "hybrid", "registration", "copy", "interpolation")
"""Every way ``propagate`` can fill a volume from annotated slices."""

PROPAGATORS = ("oneseg", "hybrid", "registration", "copy")
"""The methods that propagate slice by slice (and so can suggest a next slice)."""

MODEL_METHODS = ("oneseg", "hybrid")
"""The methods that use a OneSeg model (and so can be adapted to a volume)."""


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
        soft: Warp each label's one-hot channel by linear interpolation (class probabilities)
            instead of the labels by nearest neighbour, registering only the current labels'
            box widened by ``margin`` pixels (the rest of the slice is background).
        margin: Pixels added on each side of the labels' box (``soft`` only).
        axis: Slice axis.
    """

    def __init__(self, image: np.ndarray, *, iterations: int = 50, smoothing: float = 1.5,
                 soft: bool = False, margin: int = 16, axis: int = SLICE_AXIS) -> None:
        self.slices = to_slices(normalise_intensity(image), axis)
        self.iterations = iterations
        self.smoothing = smoothing
        self.soft = soft
        self.margin = margin

    @staticmethod
    def _image(arr: np.ndarray) -> sitk.Image:
        import SimpleITK as sitk
        return sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))

    def _register(self, fixed: np.ndarray, moving: np.ndarray
                  ) -> tuple[sitk.Image, sitk.Transform]:
        """The fixed image and the demons transform taking ``fixed``'s pixels into
        ``moving``."""
        import SimpleITK as sitk
        fixed_image = self._image(fixed)
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(self.iterations)
        demons.SetStandardDeviations(self.smoothing)
        field = demons.Execute(fixed_image, self._image(moving))
        return fixed_image, sitk.DisplacementFieldTransform(
            sitk.Cast(field, sitk.sitkVectorFloat64))

    def scores(self, k: int, nxt: int, current: np.ndarray, *, start: int) -> np.ndarray:
        """``current`` warped onto slice ``nxt`` (``soft``: ``(len(classes), H, W)`` warped
        one-hot)."""
        import SimpleITK as sitk
        if self.soft:
            return self._soft_scores(k, nxt, current)
        fixed, transform = self._register(self.slices[nxt], self.slices[k])
        label = sitk.GetImageFromArray(np.ascontiguousarray(current.astype(np.int32)))
        warped = sitk.Resample(label, fixed, transform, sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(warped)

    def _soft_scores(self, k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        import SimpleITK as sitk
        out = one_hot(np.zeros_like(current), self.classes)
        rows, cols = np.nonzero(current)
        if len(rows) == 0:
            return out
        h, w = current.shape
        box = (slice(max(rows.min() - self.margin, 0), min(rows.max() + self.margin + 1, h)),
               slice(max(cols.min() - self.margin, 0), min(cols.max() + self.margin + 1, w)))
        fixed, transform = self._register(self.slices[nxt][box], self.slices[k][box])
        for c, channel in enumerate(one_hot(current[box], self.classes)):
            warped = sitk.Resample(self._image(channel), fixed, transform, sitk.sitkLinear,
                                   1.0 if c == 0 else 0.0)
            out[(c, *box)] = sitk.GetArrayFromImage(warped)
        return out

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """One-hot of the labels (``soft``: the warped one-hot, normalised)."""
        if not self.soft:
            return super().probabilities(scores)
        return scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-6)


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
