"""Pictures of label volumes: overlays on the image, prediction-vs-reference maps, grids.

Everything here is pure (arrays in, arrays out) except :func:`write_png`, which writes a
picture atomically. Only numpy, scipy and Pillow are used (no matplotlib).

Orientation: an axial plane (fixed ``k``, the slice axis) shows ``i`` across and ``j`` down; a
coronal plane (fixed ``j``) and a sagittal plane (fixed ``i``) show ``k`` upwards. Given the
volume's direction matrix, axes are flipped to the radiological convention (patient's right on
the viewer's left, anterior up, superior up) when the matrix is close to axis-aligned
(:func:`display_flips`); for oblique volumes the voxel axes are shown as they are. Slice indices
in captions are always the file's voxel indices. Pixels are resampled (nearest neighbour) to
the voxel spacing, so a 3 mm axis is drawn three times as long as a 1 mm one.

Colours: each label value has a fixed colour (:func:`label_colour`), drawn as a translucent fill
with an opaque outline of the same colour. Error maps colour agreeing voxels green, extra ones
(false positives) red, missed ones (false negatives) blue and voxels given the wrong label yellow.

Example:
    >>> import numpy as np
    >>> truth = np.zeros((20, 20, 5), np.uint8); truth[5:15, 5:15, 1:4] = 1
    >>> fig = comparison_figure(np.roll(truth, 2, axis=0), truth, spacing=(1, 1, 2))
    >>> fig.rgb.dtype, fig.rgb.shape[2]
    (dtype('uint8'), 3)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS

Colour = tuple[int, int, int]

VIEWS = ("axial", "coronal", "sagittal")
"""Plane names: axial fixes the slice axis ``k``, coronal fixes ``j``, sagittal fixes ``i``."""

PALETTE = np.array(
    [
        [230, 80, 60],
        [60, 160, 230],
        [250, 200, 40],
        [120, 220, 90],
        [200, 90, 220],
        [240, 140, 40],
        [90, 220, 220],
        [240, 110, 170],
        [160, 120, 70],
        [150, 150, 255],
        [190, 230, 60],
        [255, 170, 130],
    ],
    np.uint8,
)
"""Colours of label values 1, 2, ...; larger values cycle through the list."""

AGREE_COLOUR: Colour = (40, 200, 80)
EXTRA_COLOUR: Colour = (255, 50, 50)
MISSED_COLOUR: Colour = (50, 120, 255)
WRONG_COLOUR: Colour = (255, 220, 0)
MARK_COLOUR: Colour = (255, 255, 255)
BACKGROUND: Colour = (24, 24, 24)
TEXT_COLOUR: Colour = (235, 235, 235)

ERROR_LEGEND: tuple[tuple[Colour, str], ...] = (
    (AGREE_COLOUR, "agree"),
    (EXTRA_COLOUR, "extra (false positive)"),
    (MISSED_COLOUR, "missed (false negative)"),
    (WRONG_COLOUR, "wrong label"),
)
"""Legend entries of an error map."""

_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
_MARGIN = 6
_TEXT_H = 16


def label_colour(value: int) -> Colour:
    """Colour of a label value (``value >= 1``).

    Example:
        >>> label_colour(1)
        (230, 80, 60)
    """
    if value < 1:
        raise ValueError(f"label values start at 1, got {value}")
    r, g, b = PALETTE[(int(value) - 1) % len(PALETTE)]
    return int(r), int(g), int(b)


def intensity_limits(
    image: np.ndarray, low: float = 1.0, high: float = 99.0
) -> tuple[float, float]:
    """Grey-level window of a volume: its ``low`` and ``high`` percentiles (finite voxels).

    Large volumes are subsampled, so this stays fast on a 512 x 512 x 300 CT.
    """
    flat = np.asarray(image).ravel()
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 1_000_000]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(flat, [low, high])
    return float(lo), float(hi)


Flips = tuple[bool, bool, bool]
NO_FLIPS: Flips = (False, False, False)


def display_flips(direction: np.ndarray | None) -> Flips:
    """Which voxel axes to reverse so planes show in the radiological convention.

    Targets (LPS world coordinates, as SimpleITK reads them): ``i`` towards the patient's left
    (so the patient's right is on the viewer's left), ``j`` towards posterior (anterior up) and
    ``k`` towards superior. An axis is reversed only when it runs mainly along its own world
    axis, backwards; oblique or permuted volumes are shown in voxel axes.

    Args:
        direction: ``3 x 3`` matrix whose columns are the world directions of the voxel axes,
            or ``None`` (no flips).

    Example:
        >>> display_flips(np.diag([-1.0, -1.0, 1.0]))
        (True, True, False)
    """
    if direction is None:
        return NO_FLIPS
    d = np.asarray(direction, float)
    if d.shape != (3, 3):
        return NO_FLIPS
    flips = []
    for axis in range(3):
        column = np.abs(d[:, axis])
        own = column[axis] >= column.max() - 1e-6 and column[axis] > 0.5
        flips.append(bool(own and d[axis, axis] < 0))
    return flips[0], flips[1], flips[2]


def plane(volume: np.ndarray, view: str, index: int, flips: Flips = NO_FLIPS) -> np.ndarray:
    """The 2D plane ``index`` of a 3D ``[i, j, k]`` array, oriented for display (rows, cols).

    Args:
        volume: 3D array.
        view: ``axial``, ``coronal`` or ``sagittal``.
        index: Voxel index along the fixed axis.
        flips: Voxel axes to reverse on screen (:func:`display_flips`).
    """
    fi, fj, fk = flips
    if view == "axial":
        out = volume[:, :, index].T
        rows_flip, cols_flip = fj, fi
    elif view == "coronal":
        out = volume[:, index, :].T[::-1]
        rows_flip, cols_flip = fk, fi
    elif view == "sagittal":
        out = volume[index, :, :].T[::-1]
        rows_flip, cols_flip = fk, fj
    else:
        raise ValueError(f"unknown view {view!r} ({', '.join(VIEWS)})")
    if rows_flip:
        out = out[::-1]
    if cols_flip:
        out = out[:, ::-1]
    return out


def slice_row(n_slices: int, k: int, flips: Flips = NO_FLIPS) -> int:
    """Row of a coronal or sagittal plane (before resampling) that shows axial slice ``k``."""
    return int(k) if flips[2] else n_slices - 1 - int(k)


def plane_spacing(spacing: Sequence[float], view: str) -> tuple[float, float]:
    """Pixel size (row, column) in mm of a plane from :func:`plane`."""
    si, sj, sk = (float(s) for s in spacing)
    return {"axial": (sj, si), "coronal": (sk, si), "sagittal": (sk, sj)}[view]


def contour(mask: np.ndarray) -> np.ndarray:
    """Outline of a 2D mask: its pixels with a 4-neighbour outside it (or on the border)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    structure = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def grey(image2d: np.ndarray | None, shape: tuple[int, int],
         limits: tuple[float, float] | None = None) -> np.ndarray:
    """An image plane as float RGB in ``[0, 255]`` (black when ``image2d`` is ``None``)."""
    if image2d is None:
        return np.zeros((*shape, 3), np.float32)
    if image2d.shape != tuple(shape):
        raise ValueError(f"image plane {image2d.shape} differs from label plane {shape}")
    lo, hi = limits if limits is not None else intensity_limits(image2d)
    scaled = np.clip((np.asarray(image2d, np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(scaled[..., None] * 255.0, 3, axis=2)


def fill(rgb: np.ndarray, label2d: np.ndarray, *, alpha: float = 0.45,
         outline: bool = True) -> np.ndarray:
    """Draw every label of a plane over ``rgb``: translucent fill, opaque outline.

    Args:
        rgb: ``(H, W, 3)`` background, values in ``[0, 255]``.
        label2d: ``(H, W)`` integer labels (0 = background).
        alpha: Opacity of the fill.
        outline: Draw each label's outline in its opaque colour.

    Returns:
        ``(H, W, 3)`` uint8 picture.
    """
    out = np.asarray(rgb, np.float32).copy()
    for value in np.unique(label2d):
        if value <= 0:
            continue
        mask = label2d == value
        colour = np.array(label_colour(int(value)), np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        if outline:
            out[contour(mask)] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def outline(rgb: np.ndarray, mask: np.ndarray, colour: Colour = MARK_COLOUR) -> np.ndarray:
    """Draw the outline of ``mask`` over ``rgb`` in one opaque colour; uint8 result."""
    out = np.asarray(rgb).copy()
    out[contour(mask)] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def error_categories(pred2d: np.ndarray, truth2d: np.ndarray) -> dict[str, np.ndarray]:
    """Masks ``agree``, ``extra``, ``missed`` and ``wrong`` of a prediction against a reference."""
    p, t = np.asarray(pred2d) > 0, np.asarray(truth2d) > 0
    same = np.asarray(pred2d) == np.asarray(truth2d)
    return {
        "agree": p & t & same,
        "extra": p & ~t,
        "missed": t & ~p,
        "wrong": p & t & ~same,
    }


def errors(rgb: np.ndarray, pred2d: np.ndarray, truth2d: np.ndarray, *,
           alpha: float = 0.6) -> np.ndarray:
    """Colour each voxel of a plane by agreement of prediction and reference (see module doc)."""
    out = np.asarray(rgb, np.float32).copy()
    colours = (AGREE_COLOUR, EXTRA_COLOUR, MISSED_COLOUR, WRONG_COLOUR)
    for mask, colour in zip(error_categories(pred2d, truth2d).values(), colours, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def display_size(shape: tuple[int, int], spacing: tuple[float, float],
                 panel_px: int, min_ratio: float = 0.25) -> tuple[int, int]:
    """Pixel size ``(H, W)`` of a plane whose longer physical side becomes ``panel_px``.

    The shorter side keeps the physical proportion but is stretched to at least
    ``min_ratio * panel_px`` (a coronal plane through 20 slices of a wide MR stays readable).
    """
    height_mm, width_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    scale = panel_px / max(height_mm, width_mm, 1e-9)
    shortest = max(1, round(min_ratio * panel_px))
    return (max(shortest, round(height_mm * scale)), max(shortest, round(width_mm * scale)))


def resize_indices(n_in: int, n_out: int) -> np.ndarray:
    """Nearest-neighbour source index of each of ``n_out`` pixels along an axis of ``n_in``."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


@dataclass
class Panel:
    """One picture in a figure.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 pixels as displayed.
        rows: For each pixel row, the row of the source plane it shows (see :func:`plane`).
        cols: For each pixel column, the column of the source plane it shows.
        view: ``axial``, ``coronal`` or ``sagittal``.
        index: Index of the plane along its fixed axis.
        column: Name of the panel's column (e.g. ``reference``); its title.
        flips: Voxel axes reversed on screen (see :func:`plane`).
        row: Row of the panel in the figure.
        top: First pixel row in the figure (set by :func:`compose`).
        left: First pixel column in the figure (set by :func:`compose`).
    """

    rgb: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    view: str
    index: int
    column: str
    flips: Flips = NO_FLIPS
    row: int = 0
    top: int = 0
    left: int = 0

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.rgb.shape[1])

    def source(self, plane2d: np.ndarray) -> np.ndarray:
        """``plane2d`` resampled to this panel's pixels (which plane value each pixel shows)."""
        return plane2d[np.ix_(self.rows, self.cols)]

    def crop(self, picture: np.ndarray) -> np.ndarray:
        """This panel's pixels cut out of the whole figure's ``picture``."""
        return picture[self.top : self.top + self.height, self.left : self.left + self.width]


@dataclass
class Figure:
    """A composed picture and the panels it is made of."""

    rgb: np.ndarray
    panels: list[Panel] = field(default_factory=list)

    def find(self, column: str, row: int = 0) -> Panel:
        """The panel of ``column`` in ``row``.

        Raises:
            KeyError: No such panel.
        """
        for p in self.panels:
            if p.column == column and p.row == row:
                return p
        raise KeyError(f"no panel {column!r} in row {row}")


def make_panel(small: np.ndarray, *, view: str, index: int, column: str,
               spacing: tuple[float, float], panel_px: int, flips: Flips = NO_FLIPS) -> Panel:
    """Resample a plane-sized RGB picture to its physical aspect, ``panel_px`` on its long side."""
    height, width = display_size(small.shape[:2], spacing, panel_px)
    rows = resize_indices(small.shape[0], height)
    cols = resize_indices(small.shape[1], width)
    return Panel(np.ascontiguousarray(small[np.ix_(rows, cols)]), rows, cols, view, index, column,
                 flips)


def mark_row(panel: Panel, source_row: int, colour: Colour = MARK_COLOUR) -> None:
    """Mark the pixel rows showing ``source_row`` with ticks at both sides of ``panel``.

    The ticks leave the middle of the row visible (the labels on it stay readable).
    """
    hit = np.nonzero(panel.rows == source_row)[0]
    tick = max(4, panel.width // 16)
    for r in hit:
        panel.rgb[r, :tick] = colour
        panel.rgb[r, -tick:] = colour


@functools.lru_cache(maxsize=1)
def _font():  # a PIL font object (its class differs with and without FreeType)
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has a single bitmap default font
        return ImageFont.load_default()


def _text_width(text: str) -> int:
    box = _font().getbbox(text)
    return int(box[2] - box[0])


def compose(
    grid: Sequence[Sequence[Panel | None]],
    *,
    row_captions: Sequence[str] | None = None,
    legend: Sequence[tuple[Colour, str]] = (),
    title: str | None = None,
) -> Figure:
    """Lay panels out in a grid with titles, row captions and a colour key.

    Args:
        grid: Rows of panels (``None`` leaves a cell empty). Each panel's ``column`` is written
            above it.
        row_captions: One line above each row (``""`` for none).
        legend: ``(colour, text)`` entries drawn as swatches under the grid.
        title: A line above everything.

    Returns:
        The figure; its panels know where they were placed.
    """
    from PIL import Image, ImageDraw

    n_cols = max((len(r) for r in grid), default=0)
    col_w = [max((r[c].width for r in grid if c < len(r) and r[c] is not None), default=0)
             for c in range(n_cols)]
    row_h = [max((p.height for p in r if p is not None), default=0) for r in grid]
    captions = list(row_captions) if row_captions is not None else [""] * len(grid)
    title_h = _TEXT_H + _MARGIN if title else 0
    caption_h = [(_TEXT_H if cap else 0) for cap in captions]
    width = max(sum(col_w) + _MARGIN * (n_cols + 1), 240)
    if title:
        width = max(width, _text_width(title) + 2 * _MARGIN)
    if captions:
        width = max(width, max(_text_width(c) for c in captions) + 2 * _MARGIN)
    # Legend entries flow left to right, wrapping at the figure's width.
    entries, x, y = [], _MARGIN, 0
    for colour, text in legend:
        w = 14 + 4 + _text_width(text) + 14
        if x + w > width - _MARGIN and x > _MARGIN:
            x, y = _MARGIN, y + _TEXT_H + 2
        entries.append((x, y, colour, text))
        x += w
    legend_h = (y + _TEXT_H + 2 * _MARGIN) if legend else 0
    height = (title_h + sum(row_h) + sum(caption_h)
              + len(grid) * (_TEXT_H + _MARGIN) + _MARGIN + legend_h)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    texts: list[tuple[int, int, str]] = []
    if title:
        texts.append((_MARGIN, _MARGIN // 2, title))
    placed: list[Panel] = []
    top = title_h + _MARGIN
    for r, row in enumerate(grid):
        if captions[r]:
            texts.append((_MARGIN, top, captions[r]))
            top += caption_h[r]
        left = _MARGIN
        for c in range(n_cols):
            p = row[c] if c < len(row) else None
            if p is not None:
                texts.append((left, top, p.column))
                p.row, p.top, p.left = r, top + _TEXT_H, left
                canvas[p.top : p.top + p.height, p.left : p.left + p.width] = p.rgb
                placed.append(p)
            left += col_w[c] + _MARGIN
        top += _TEXT_H + row_h[r] + _MARGIN
    legend_top = top
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = _font()
    for x0, y0, text in texts:
        draw.text((x0, y0), text, fill=TEXT_COLOUR, font=font)
    for x0, y0, colour, text in entries:
        yy = legend_top + y0
        draw.rectangle([x0, yy + 2, x0 + 13, yy + 13], fill=tuple(colour), outline=TEXT_COLOUR)
        draw.text((x0 + 18, yy), text, fill=TEXT_COLOUR, font=font)
    return Figure(np.asarray(picture).copy(), placed)


def label_legend(values: Sequence[int], names: Mapping[int, str] | None = None
                 ) -> list[tuple[Colour, str]]:
    """Legend entries of label values, named from ``names`` or ``label V``."""
    names = names or {}
    return [(label_colour(v), str(names.get(v, f"label {v}"))) for v in values if v > 0]


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
    p, t = pred2d > 0, truth2d > 0
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t & (pred2d == truth2d)).sum()) / total


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


def check_png_path(path: str | Path) -> Path:
    """Check that a picture can be written at ``path`` (before any long computation).

    Raises:
        InputError: The name does not end in ``.png``, it is a folder, or its folder is missing.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError("a picture must be a .png file", path)
    if path.is_dir():
        raise InputError("is a folder, expected a .png file", path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("output folder does not exist", parent)
    return path


def write_png(path: str | Path, rgb: np.ndarray | Figure) -> Path:
    """Write an RGB picture (or a :class:`Figure`) as a PNG, atomically.

    Args:
        path: Output ``.png`` file; its folder must exist.
        rgb: ``(H, W, 3)`` uint8 array or a figure.

    Returns:
        The written path.

    Raises:
        InputError: Bad path (see :func:`check_png_path`) or the file cannot be written.
    """
    from PIL import Image

    from sparseseg.io.writer import atomic_path

    path = check_png_path(path)
    pixels = rgb.rgb if isinstance(rgb, Figure) else np.asarray(rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) picture, got shape {pixels.shape}")
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(tmp, format="PNG")
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc})", path) from None
    return path
