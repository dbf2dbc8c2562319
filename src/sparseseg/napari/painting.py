"""Which slices the annotator painted, and keeping them through propagation.

The widget tracks the slices a person touched (painted, filled, erased, corrected). Those
slices are the annotation: propagation starts from the non-empty ones, and its result never
replaces any of them. Everything here works on layer data, ``(slice, rows, columns)``
(:mod:`sparseseg.napari.layers`), without Qt.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sparseseg.napari.layers import SLIDER_AXIS


class PaintedSlices:
    """The set of slices a person edited in a labels layer.

    Edits are found by comparing the layer's data with a snapshot taken after the last edit
    or the last programmatic change, so every kind of napari edit counts (brush, fill,
    polygon, eraser, undo) whatever napari version records it.

    Args:
        data: The labels layer's data, ``(slice, rows, columns)``.
        painted: Slices already counted as painted (e.g. those of a loaded annotation).
    """

    def __init__(self, data: np.ndarray, painted: Iterable[int] = ()) -> None:
        self._snapshot = np.array(data, copy=True)
        self.slices: set[int] = {int(k) for k in painted}

    def update(self, data: np.ndarray) -> set[int]:
        """Record the slices that changed since the last snapshot; return them."""
        data = np.asarray(data)
        if data.shape != self._snapshot.shape:
            self.reset(data)
            return set()
        moved = np.moveaxis(data != self._snapshot, SLIDER_AXIS, 0)
        changed = {int(k) for k in np.flatnonzero(moved.reshape(moved.shape[0], -1).any(1))}
        if changed:
            self.slices |= changed
            self._snapshot = np.array(data, copy=True)
        return changed

    def reset(self, data: np.ndarray, painted: Iterable[int] = ()) -> None:
        """Start again from ``data`` (after a programmatic change) with these slices painted."""
        self._snapshot = np.array(data, copy=True)
        self.slices = {int(k) for k in painted}

    def accept(self, data: np.ndarray) -> None:
        """Take ``data`` as the new snapshot without counting its changes as painting."""
        self._snapshot = np.array(data, copy=True)

    def annotation(self, data: np.ndarray) -> np.ndarray:
        """The painted slices of ``data``, every other slice zero (layer order)."""
        return painted_only(data, self.slices)

    def empty(self, data: np.ndarray) -> list[int]:
        """The painted slices of ``data`` that hold no label (painted empty), sorted."""
        return sorted(self.slices - set(labeled_slices(self.annotation(data))))


def labeled_slices(data: np.ndarray) -> list[int]:
    """Slices of layer data that hold any label."""
    moved = np.moveaxis(np.asarray(data), SLIDER_AXIS, 0)
    return [int(k) for k in np.flatnonzero(moved.reshape(moved.shape[0], -1).any(1))]


def painted_only(data: np.ndarray, slices: Iterable[int]) -> np.ndarray:
    """A copy of ``data`` holding only the given slices (zero elsewhere)."""
    data = np.asarray(data)
    out = np.zeros_like(data)
    index = sorted(int(k) for k in slices)
    if index:
        src = np.moveaxis(data, SLIDER_AXIS, 0)
        np.moveaxis(out, SLIDER_AXIS, 0)[index] = src[index]
    return out


def keep_painted(result: np.ndarray, current: np.ndarray, slices: Iterable[int]) -> np.ndarray:
    """``result`` with the painted ``slices`` taken from ``current`` (the layer as it is now).

    Args:
        result: Propagated labels, layer order.
        current: The labels layer's data now (it may hold strokes made while propagating).
        slices: The painted slices.

    Returns:
        A new array of ``current``'s dtype.
    """
    out = np.asarray(result).astype(np.asarray(current).dtype, copy=True)
    index = sorted(int(k) for k in slices)
    if index:
        np.moveaxis(out, SLIDER_AXIS, 0)[index] = np.moveaxis(np.asarray(current), SLIDER_AXIS, 0)[
            index
        ]
    return out
