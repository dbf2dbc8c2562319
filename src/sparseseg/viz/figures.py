"""Figures of label volumes: prediction against reference, several methods, previews.

:func:`comparison_figure` shows a prediction against a reference on a few representative slices
(:func:`representative_slices`) with an error map, :func:`side_by_side` several label volumes
of one image next to each other, and :func:`preview_figure` one label volume on axial slices
and its coronal and sagittal planes. Each returns a :class:`~sparseseg.viz.layout.Figure`.

Example:
    >>> import numpy as np
    >>> truth = np.zeros((20, 20, 5), np.uint8); truth[5:15, 5:15, 1:4] = 1
    >>> fig = comparison_figure(np.roll(truth, 2, axis=0), truth, spacing=(1, 1, 2))
    >>> [p.column for p in fig.panels][:3]
    ['reference', 'prediction', 'errors']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sparseseg.io.axes import SLICE_AXIS
from sparseseg.metrics import dice
from sparseseg.viz.layout import (
    ERROR_LEGEND,
    Figure,
    Panel,
    compose,
    label_legend,
    make_panel,
    mark_row,
)
from sparseseg.viz.paint import MARK_COLOUR, errors, fill, grey, intensity_limits, outline
from sparseseg.viz.planes import display_flips, plane, plane_spacing, slice_row


def centre_index(mask: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the centre of mass of ``mask`` (the middle when empty)."""
    mask = np.asarray(mask, bool)
    other = tuple(a for a in range(mask.ndim) if a != axis)
    profile = mask.sum(axis=other).astype(np.float64)
    if profile.sum() == 0:
        return mask.shape[axis] // 2
    return int(round(float((profile * np.arange(len(profile))).sum() / profile.sum())))


def representative_slices(
    pred: np.ndarray, truth: np.ndarray, *, n: int = 3, axis: int = SLICE_AXIS
) -> list[tuple[int, str]]:
    """Slices worth looking at: the largest reference area, then where the two disagree most.

    Disagreeing slices are picked greedily, preferably at least ``count / (2 n)`` slices (and
    at least two) from those already chosen, so the picture does not show three neighbours.
    When the two agree everywhere the rest is spread over the reference's extent.

    Args:
        pred: Predicted label volume.
        truth: Reference label volume.
        n: How many slices.
        axis: Slice axis.

    Returns:
        ``(index, reason)`` pairs sorted by index.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    other = tuple(a for a in range(truth.ndim) if a != axis)
    count = truth.shape[axis]
    area = (truth > 0).sum(axis=other)
    wrong = (pred != truth).sum(axis=other)
    chosen: dict[int, str] = {}
    if area.any():
        chosen[int(np.argmax(area))] = "largest reference area"
    elif (pred > 0).any():
        chosen[int(np.argmax((pred > 0).sum(axis=other)))] = "largest predicted area"
    for gap in (max(2, count // (2 * max(n, 1))), 2, 1):
        for k in np.argsort(-wrong, kind="stable"):
            if len(chosen) >= n or wrong[k] == 0:
                break
            if all(abs(int(k) - c) >= gap for c in chosen):
                chosen[int(k)] = f"{int(wrong[k])} voxels disagree"
    if len(chosen) < n:
        present = np.nonzero(area > 0)[0]
        lo, hi = (present[0], present[-1]) if len(present) else (0, count - 1)
        for k in np.linspace(lo, hi, n + 2)[1:-1].round().astype(int):
            if len(chosen) < n and int(k) not in chosen:
                chosen[int(k)] = "agreeing"
    return sorted(chosen.items())[: max(n, 1)]


def _slice_dice(pred2d: np.ndarray, truth2d: np.ndarray) -> float:
    """Dice of all labels of a plane together: a voxel counts as overlap when labels agree.

    The labels are stacked one-hot (one channel per label value present) and handed to
    :func:`sparseseg.metrics.dice`, so the overlap is ``sum_v |P_v & T_v|`` over the label
    sizes ``|P| + |T|``. A plane without any label in either scores 1.0.
    """
    values = np.union1d(pred2d[pred2d > 0], truth2d[truth2d > 0])
    if values.size == 0:
        return 1.0
    channels = values.reshape(-1, 1, 1)
    return dice(pred2d[None] == channels, truth2d[None] == channels)


def comparison_figure(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    image: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    labels: Sequence[int] | None = None,
    names: Mapping[int, str] | None = None,
    n_slices: int = 3,
    annotated: int | None = None,
    orthogonal: bool = True,
    panel_px: int = 256,
    title: str | None = None,
    direction: np.ndarray | None = None,
) -> Figure:
    """Prediction against reference on a few representative slices.

    Rows: the axial slice of largest reference area and those where prediction and reference
    disagree most (:func:`representative_slices`), the ``annotated`` slice if given, and (with
    ``orthogonal``) a coronal plane through the reference's centre. Columns: the image (when
    given), the reference, the prediction, and an error map (:func:`errors`).

    Args:
        pred: Predicted label volume ``[i, j, k]``.
        truth: Reference label volume on the same grid.
        image: Intensity volume on the same grid, drawn in grey under the labels.
        spacing: Voxel size in mm.
        labels: Only these label values (default: all).
        names: Names of label values for the colour key.
        n_slices: Number of representative axial slices.
        annotated: Index of an annotated slice to show (and mark on the coronal plane).
        orthogonal: Add a coronal row.
        panel_px: Long side of each panel in pixels.
        title: A line above the figure.
        direction: The volume's direction matrix, to show it in the radiological convention
            (:func:`display_flips`); ``None`` shows voxel axes.

    Returns:
        The figure.

    Raises:
        ValueError: The arrays are not 3D or their shapes differ.
    """
    flips = display_flips(direction)
    pred, truth = _restrict(pred, labels), _restrict(truth, labels)
    _check_shapes(pred, truth, image)
    limits = intensity_limits(image) if image is not None else None
    picks = dict(representative_slices(pred, truth, n=n_slices))
    if annotated is not None:
        picks[int(annotated)] = "annotated"
    rows: list[tuple[str, int, str]] = [("axial", k, why) for k, why in sorted(picks.items())]
    if orthogonal and truth.shape[SLICE_AXIS] > 1:
        j = centre_index(truth > 0 if truth.any() else pred > 0, axis=1)
        rows.append(("coronal", j, "coronal plane through the reference's centre"))
    grid, captions = [], []
    for view, index, why in rows:
        ps, ts = plane(pred, view, index, flips), plane(truth, view, index, flips)
        img = plane(image, view, index, flips) if image is not None else None
        base = grey(img, ts.shape, limits)
        sp = plane_spacing(spacing, view)
        cells = []
        if image is not None:
            cells.append(("image", fill(base, np.zeros(base.shape[:2], np.uint8))))
        cells += [("reference", fill(base, ts)), ("prediction", fill(base, ps)),
                  ("errors", errors(base, ps, ts))]
        row = [make_panel(rgb, view=view, index=index, column=name, spacing=sp,
                          panel_px=panel_px, flips=flips) for name, rgb in cells]
        axis_name = {"axial": "k", "coronal": "j", "sagittal": "i"}[view]
        caption = f"{view} {axis_name}={index}: {why}"
        if view == "axial":
            caption += f", slice Dice {_slice_dice(ps, ts):.3f}"
        elif annotated is not None:
            for p in row:
                mark_row(p, slice_row(truth.shape[SLICE_AXIS], annotated, flips))
            caption += f" (white ticks: annotated slice k={annotated})"
        grid.append(row)
        captions.append(caption)
    legend = label_legend(_present(pred, truth), names) + list(ERROR_LEGEND)
    return compose(grid, row_captions=captions, legend=legend, title=title)


def side_by_side(
    volumes: Mapping[str, np.ndarray],
    *,
    slices: Sequence[int],
    image: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    reference: str | None = None,
    names: Mapping[int, str] | None = None,
    orthogonal: bool = False,
    panel_px: int = 200,
    captions: Mapping[int, str] | None = None,
    title: str | None = None,
    direction: np.ndarray | None = None,
) -> Figure:
    """Several label volumes of one image next to each other, one row per axial slice.

    Args:
        volumes: Column name -> label volume ``[i, j, k]`` (e.g. reference and each method).
        slices: Axial slice indices, one row each.
        image: Intensity volume, drawn in grey under the labels and as a first column.
        spacing: Voxel size in mm.
        reference: Name of the volume whose outline is drawn in white on the other columns.
        names: Names of label values for the colour key.
        orthogonal: Add a coronal row through the reference's (or first volume's) centre.
        panel_px: Long side of each panel in pixels.
        captions: A line above the row of a slice index.
        title: A line above the figure.
        direction: The volume's direction matrix (see :func:`display_flips`).

    Returns:
        The figure.
    """
    flips = display_flips(direction)
    arrays = {k: np.asarray(v) for k, v in volumes.items()}
    if not arrays:
        raise ValueError("side_by_side needs at least one label volume")
    first = next(iter(arrays.values()))
    _check_shapes(*arrays.values(), image)
    if reference is not None and reference not in arrays:
        raise ValueError(f"reference {reference!r} is not among {list(arrays)}")
    limits = intensity_limits(image) if image is not None else None
    captions = captions or {}
    views = [("axial", int(k), captions.get(int(k), "")) for k in slices]
    if orthogonal and first.shape[SLICE_AXIS] > 1:
        centre = arrays[reference] if reference is not None else first
        views.append(("coronal", centre_index(centre > 0, axis=1), "coronal plane"))
    grid, row_captions = [], []
    for view, index, caption in views:
        sp = plane_spacing(spacing, view)
        img = plane(image, view, index, flips) if image is not None else None
        base = grey(img, plane(first, view, index, flips).shape, limits)
        cells = []
        if image is not None:
            cells.append(("image", fill(base, np.zeros(base.shape[:2], np.uint8))))
        ref2d = plane(arrays[reference], view, index, flips) if reference is not None else None
        for name, vol in arrays.items():
            rgb = fill(base, plane(vol, view, index, flips))
            if ref2d is not None and name != reference:
                rgb = outline(rgb, ref2d > 0)
            cells.append((name, rgb))
        grid.append([make_panel(rgb, view=view, index=index, column=name, spacing=sp,
                                panel_px=panel_px, flips=flips) for name, rgb in cells])
        axis_name = "k" if view == "axial" else "j"
        row_captions.append(f"{view} {axis_name}={index}" + (f": {caption}" if caption else ""))
    legend = label_legend(_present(*arrays.values()), names)
    if reference is not None:
        legend.append((MARK_COLOUR, f"outline: {reference}"))
    return compose(grid, row_captions=row_captions, legend=legend, title=title)


def preview_slices(label: np.ndarray, n: int, *, annotated: int | None = None) -> list[int]:
    """``n`` axial slices spread evenly over the label's extent (the volume's when empty).

    The ``annotated`` slice, when given, replaces the nearest of them.
    """
    count = label.shape[SLICE_AXIS]
    present = np.nonzero(np.asarray(label).any(axis=(0, 1)))[0]
    lo, hi = (int(present[0]), int(present[-1])) if len(present) else (0, count - 1)
    picks = [int(k) for k in np.linspace(lo, hi, n + 2)[1:-1].round()] if n > 0 else []
    if hi - lo + 1 <= n:
        picks = list(range(lo, hi + 1))
    if annotated is not None and annotated not in picks:
        if picks:
            nearest = min(range(len(picks)), key=lambda i: abs(picks[i] - annotated))
            picks[nearest] = int(annotated)
        else:
            picks = [int(annotated)]
    return sorted(dict.fromkeys(picks))


def preview_figure(
    label: np.ndarray,
    *,
    image: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    names: Mapping[int, str] | None = None,
    annotated: int | None = None,
    n_axial: int = 4,
    panel_px: int = 256,
    title: str | None = None,
    direction: np.ndarray | None = None,
) -> Figure:
    """A preview of a label volume over its image: axial slices, coronal and sagittal planes.

    The first row holds ``n_axial`` axial slices spread over the label's extent (including the
    ``annotated`` slice, if given); the second row the coronal and sagittal planes through the
    label's centre, with the annotated slice marked by ticks at their sides.

    Args:
        label: Label volume ``[i, j, k]``.
        image: Intensity volume on the same grid.
        spacing: Voxel size in mm.
        names: Names of label values for the colour key.
        annotated: Index of the annotated slice.
        n_axial: Number of axial slices.
        panel_px: Long side of each panel in pixels.
        title: A line above the figure.
        direction: The volume's direction matrix (see :func:`display_flips`).

    Returns:
        The figure.
    """
    flips = display_flips(direction)
    label = np.asarray(label)
    _check_shapes(label, image)
    limits = intensity_limits(image) if image is not None else None
    mask = label > 0

    def panel_of(view: str, index: int, column: str) -> Panel:
        lab = plane(label, view, index, flips)
        img = plane(image, view, index, flips) if image is not None else None
        rgb = fill(grey(img, lab.shape, limits), lab)
        p = make_panel(rgb, view=view, index=index, column=column,
                       spacing=plane_spacing(spacing, view), panel_px=panel_px, flips=flips)
        if view != "axial" and annotated is not None:
            mark_row(p, slice_row(label.shape[SLICE_AXIS], annotated, flips))
        return p

    axial = [panel_of("axial", k, f"k={k}" + (" (annotated)" if k == annotated else ""))
             for k in preview_slices(label, n_axial, annotated=annotated)]
    grid: list[list[Panel | None]] = [list(axial)]
    captions = ["axial slices"]
    if label.shape[SLICE_AXIS] > 1:
        j, i = centre_index(mask, axis=1), centre_index(mask, axis=0)
        grid.append([panel_of("coronal", j, f"coronal j={j}"),
                     panel_of("sagittal", i, f"sagittal i={i}")])
        mark = "" if annotated is None else f" (white ticks: annotated slice k={annotated})"
        captions.append("through the label's centre" + mark)
    legend = label_legend(_present(label), names)
    return compose(grid, row_captions=captions, legend=legend, title=title)


def _check_shapes(*arrays: np.ndarray | None) -> None:
    shapes = {tuple(np.shape(a)) for a in arrays if a is not None}
    if any(len(s) != 3 for s in shapes):
        raise ValueError(f"expected 3D arrays, got shapes {sorted(shapes)}")
    if len(shapes) > 1:
        raise ValueError(f"arrays differ in shape: {sorted(shapes)}")


def _present(*arrays: np.ndarray) -> list[int]:
    values: set[int] = set()
    for a in arrays:
        values.update(int(v) for v in np.unique(a) if v > 0)
    return sorted(values)


def _restrict(label: np.ndarray, labels: Sequence[int] | None) -> np.ndarray:
    label = np.asarray(label)
    if labels is None:
        return label
    return np.where(np.isin(label, list(labels)), label, 0)


