"""The work behind the widget's buttons, run in a worker thread (no Qt here).

Each task takes layer data (``(slice, rows, columns)``, :mod:`sparseseg.napari.layers`) and
the image volume, calls :mod:`sparseseg.oneseg`, and returns layer data again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.napari.layers import from_display, label_dtype, to_display
from sparseseg.napari.painting import labeled_slices
from sparseseg.oneseg.annotation import SliceAnnotation

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called after each propagated slice."""

MODEL_METHODS = ("oneseg", "hybrid")
"""Methods that use a OneSeg model (:data:`sparseseg.oneseg.baselines.MODEL_METHODS`; not
imported from there, which loads torch)."""

HYBRID_WEIGHT = 0.7
"""OneSeg's share of ``hybrid``'s mix by default (:data:`sparseseg.oneseg.hybrid.HYBRID_WEIGHT`;
a copy, for the same reason)."""

ADAPT_CAP = 60.0
"""Seconds guided adaptation may take at most (its 10 steps take 1-5 s on 2 CPU cores)."""


@dataclass
class SliceSuggestion:
    """The slice the widget moves the viewer to.

    Attributes:
        slice: Index along sparseseg's slice axis (the napari slider).
        how: ``select`` (model's choice on an empty annotation), ``middle`` (middle of the
            slices holding structure, without a model), ``suggest`` (least confident slice
            of the propagation of the annotation), ``cross-checked`` (the same, with a
            registration's disagreement added to the doubt) or ``refined`` (the slice a
            refinement network doubts most).
        confidence: One value per slice (``suggest`` and ``cross-checked``).
        labels: The propagated labels in layer order (``suggest``, ``cross-checked`` and
            ``refined``; refined labels for ``refined``).
    """

    slice: int
    how: str
    confidence: np.ndarray | None = None
    labels: np.ndarray | None = None


@functools.lru_cache(maxsize=1)
def _load_model(path: str, device: str, stamp: float):
    from sparseseg.device import resolve_device
    from sparseseg.oneseg.model import OneSegModel

    return OneSegModel.load(path, device=resolve_device(device))


def load_model(path: str | Path | None, device: str = "auto"):
    """The OneSeg model in folder ``path`` (kept loaded while the folder is unchanged).

    Returns:
        The loaded model, or ``None`` for ``None``.

    Raises:
        ModelError: Not a usable model folder.
    """
    if path is None:
        return None
    path = Path(path).expanduser()
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime if weights.is_file() else 0.0
    return _load_model(str(path.resolve()), device, stamp)


def painted_annotation(annotation: np.ndarray, painted: Iterable[int] | None
                       ) -> np.ndarray | SliceAnnotation:
    """What the API is given: the painted slices, each one exact.

    With ``painted`` (the slices the user touched) a painted slice left without any label is
    kept as a slice annotated empty ("no structure here", e.g. an erased leak), which the
    propagation respects; without it only the slices holding labels count.
    """
    volume = from_display(annotation)
    if painted is None:
        return volume
    stack = np.moveaxis(volume, SLICE_AXIS, 0)
    return SliceAnnotation({int(k): np.ascontiguousarray(stack[k]) for k in sorted(painted)},
                           n_slices=stack.shape[0])


def _weight(intensity_weight: float | None) -> float:
    """The intensity weight to use (``None``: sparseseg's default)."""
    from sparseseg.oneseg.intensity import INTENSITY_WEIGHT

    return INTENSITY_WEIGHT if intensity_weight is None else intensity_weight


def propagate_labels(
    *,
    image: Volume,
    annotation: np.ndarray,
    model: str | Path | None,
    method: str,
    device: str = "auto",
    progress: Progress | None = None,
    painted: Iterable[int] | None = None,
    adapt: bool = False,
    intensity_weight: float | None = None,
    hybrid_weight: float = HYBRID_WEIGHT,
    refiner: str | Path | None = None,
) -> np.ndarray:
    """Propagate the painted slices through the volume.

    Args:
        image: The image volume.
        annotation: The painted slices in layer order (every other slice zero).
        model: Model folder (``oneseg``, ``hybrid``) or ``None`` (the training-free methods).
        method: ``oneseg``, ``hybrid``, ``registration``, ``copy`` or ``interpolation``
            (:func:`sparseseg.oneseg.propagate`).
        device: Where to compute.
        progress: Called with ``(done, total)`` after each propagated slice.
        painted: The slices the user painted (:func:`painted_annotation`).
        adapt: First tune a copy of the OneSeg model to the painted slices (guided test-time
            adaptation, :func:`sparseseg.oneseg.adapt`; 1-5 s).
        intensity_weight: Weight of the scan's intensities in the label decision (``None``:
            the default, :data:`sparseseg.oneseg.intensity.INTENSITY_WEIGHT`).
        hybrid_weight: OneSeg's share of ``hybrid``'s mix, in ``[0, 1]`` (the rest is
            registration's); other methods ignore it.
        refiner: A refinement network folder (``sparseseg oneseg refine --save-model``):
            the propagated labels are refined with it (a few seconds), or ``None``.

    Returns:
        The propagated labels in layer order (painted slices as returned by the API; the
        widget puts the layer's own painted slices back over them).

    Raises:
        SparsesegError: Nothing painted, bad model folder, bad annotation.
    """
    from sparseseg import oneseg

    if not labeled_slices(annotation):
        raise InputError("nothing painted yet: paint the structures on at least one slice")
    net = load_model(model, device) if method in MODEL_METHODS else None
    result = oneseg.propagate(
        model=net,
        image=image,
        annotation=painted_annotation(annotation, painted),
        method=method,
        adapt=ADAPT_CAP if adapt and method in MODEL_METHODS else 0.0,
        intensity_weight=_weight(intensity_weight),
        hybrid_weight=hybrid_weight,
        device=device,
        progress=progress or False,
        refiner=_folder(refiner),
    )
    return to_display(result.array)


def _folder(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser()


def suggest_slice(
    *,
    image: Volume,
    annotation: np.ndarray,
    model: str | Path | None,
    method: str,
    device: str = "auto",
    progress: Progress | None = None,
    painted: Iterable[int] | None = None,
    adapt: bool = False,
    intensity_weight: float | None = None,
    hybrid_weight: float = HYBRID_WEIGHT,
    refiner: str | Path | None = None,
    cross_check: str | None = None,
) -> SliceSuggestion:
    """The slice to paint next.

    With nothing painted: the model's choice (:func:`sparseseg.oneseg.select`), or without a
    model the middle one of the slices that hold structure. With painted slices: the slice
    whose propagation is least sure (:func:`sparseseg.oneseg.suggest`), or with ``refiner``
    the slice that refinement network doubts most.

    Args:
        image: The image volume.
        annotation: The painted slices in layer order.
        model: Model folder or ``None``.
        method: Propagation method used to judge the slices.
        device: Where to compute.
        progress: Called with ``(done, total)`` after each propagated slice.
        painted: The slices the user painted (:func:`painted_annotation`).
        adapt: As for :func:`propagate_labels`.
        intensity_weight: As for :func:`propagate_labels`.
        hybrid_weight: As for :func:`propagate_labels`.
        refiner: As for :func:`propagate_labels` (not used before anything is painted).
        cross_check: A second method whose disagreement counts as doubt
            (:func:`sparseseg.oneseg.suggest`; from two painted slices on).

    Raises:
        SparsesegError: Bad model or refiner folder or annotation, or no ``suggest`` in this
            sparseseg.
    """
    from sparseseg import oneseg

    net = load_model(model, device) if model is not None else None
    if not labeled_slices(annotation):
        if net is None:
            return SliceSuggestion(middle_slice(image.array), "middle")
        return SliceSuggestion(oneseg.select(model=net, image=image, device=device), "select")
    found = oneseg.suggest(model=net, image=image,
                           annotation=painted_annotation(annotation, painted),
                           method=method,
                           adapt=ADAPT_CAP if adapt and method in MODEL_METHODS else 0.0,
                           intensity_weight=_weight(intensity_weight),
                           hybrid_weight=hybrid_weight,
                           device=device, progress=progress or False,
                           refiner=_folder(refiner), cross_check=cross_check)
    # With a refiner the confidence would be the propagation's, not the network's: none.
    how = ("refined" if refiner is not None else "cross-checked" if found.cross_checked
           else "suggest")
    return SliceSuggestion(int(found.slice), how,
                           None if refiner is not None else np.asarray(found.confidence),
                           to_display(found.labels.array))


def middle_slice(array: np.ndarray) -> int:
    """The middle one of the slices holding structure (intensity spread), model-free.

    Decided like :func:`sparseseg.oneseg.select` with ``criterion="middle"``
    (:func:`~sparseseg.oneseg.screening.middle_structure_slice`), on the raw intensities.
    """
    from sparseseg.io.axes import to_slices
    from sparseseg.oneseg.screening import middle_structure_slice

    slices = to_slices(np.asarray(array, np.float32))
    return middle_structure_slice(slices.reshape(slices.shape[0], -1).std(axis=1))


def save_labels(path: str | Path, data: np.ndarray, reference: Volume) -> Path:
    """Write layer data as NIfTI in ``reference``'s geometry, atomically.

    Args:
        path: Output file (``.nii.gz``).
        data: The labels layer's data (layer order).
        reference: The image volume.

    Raises:
        InputError: The folder is missing or not writable.
    """
    path = Path(path).expanduser()
    array = from_display(data)
    return write_volume(path, array, reference, dtype=label_dtype(array))
