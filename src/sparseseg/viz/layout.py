"""Laying pictures out: panels, figures, grids with captions and colour keys, text drawing.

:class:`Canvas` and :func:`font` are the one place where Pillow canvases, fonts and text are
made; the figures here, the LTUDA training curves (:mod:`sparseseg.ltuda.curves`) and the
benchmark charts (``benchmarks/_plot.py``) all draw through them, so every picture of the
project uses the same font. Pillow is imported only when something is drawn.

Example:
    >>> canvas = Canvas.blank((40, 20), BACKGROUND)
    >>> canvas.text((2, 2), "ok", fill=TEXT_COLOUR)
    >>> canvas.pixels().shape
    (20, 40, 3)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sparseseg.viz.paint import (
    AGREE_COLOUR,
    EXTRA_COLOUR,
    MARK_COLOUR,
    MISSED_COLOUR,
    WRONG_COLOUR,
    Colour,
    label_colour,
)
from sparseseg.viz.planes import NO_FLIPS, Flips, display_size, resize_indices

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

BACKGROUND: Colour = (24, 24, 24)
TEXT_COLOUR: Colour = (235, 235, 235)

FONT_SIZE = 12
"""Font size (pixels) of figure titles, captions and legends."""

ERROR_LEGEND: tuple[tuple[Colour, str], ...] = (
    (AGREE_COLOUR, "agree"),
    (EXTRA_COLOUR, "extra (false positive)"),
    (MISSED_COLOUR, "missed (false negative)"),
    (WRONG_COLOUR, "wrong label"),
)
"""Legend entries of an error map."""

_MARGIN = 6
_TEXT_H = 16


def font(size: int | None = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels (loaded once per size).

    Args:
        size: Font size; ``None`` gives Pillow's own default size (what ``ImageDraw.text``
            uses when given no font). Pillow < 10.1 has a single bitmap font of fixed size.
    """
    return _load_font(size)


@functools.cache
def _load_font(size: int | None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    if size is None:
        return ImageFont.load_default()
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap default font
        return ImageFont.load_default()


def text_width(text: str, size: int | None = FONT_SIZE) -> int:
    """Width in pixels of ``text`` drawn in :func:`font` of ``size``."""
    box = font(size).getbbox(text)
    return int(box[2] - box[0])


class Canvas:
    """An RGB picture to draw on with Pillow; text is drawn in :func:`font`.

    Args:
        image: The Pillow image drawn on (in place).

    Attributes:
        image: The Pillow image.
        draw: Its ``ImageDraw`` (lines, rectangles, ellipses).
    """

    def __init__(self, image: Image.Image) -> None:
        from PIL import ImageDraw

        self.image = image
        self.draw: ImageDraw.ImageDraw = ImageDraw.Draw(image)

    @classmethod
    def blank(cls, size: tuple[int, int], background: Colour | str) -> Canvas:
        """A canvas of ``size = (width, height)`` filled with ``background``."""
        from PIL import Image

        return cls(Image.new("RGB", size, background))

    @classmethod
    def from_array(cls, pixels: np.ndarray) -> Canvas:
        """A canvas holding a copy of an ``(H, W, 3)`` uint8 picture."""
        from PIL import Image

        return cls(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)))

    def text(self, xy: tuple[float, float], text: str, *, fill: Colour | str,
             size: int | None = FONT_SIZE) -> None:
        """Write ``text`` with its top left corner at ``xy`` in :func:`font` of ``size``."""
        self.draw.text(xy, text, fill=fill, font=font(size))

    def pixels(self) -> np.ndarray:
        """A copy of the picture as an ``(H, W, 3)`` uint8 array."""
        return np.asarray(self.image).copy()


@dataclass
class Panel:
    """One picture in a figure.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 pixels as displayed.
        rows: For each pixel row, the row of the source plane it shows (see
            :func:`sparseseg.viz.planes.plane`).
        cols: For each pixel column, the column of the source plane it shows.
        view: ``axial``, ``coronal`` or ``sagittal``.
        index: Index of the plane along its fixed axis.
        column: Name of the panel's column (e.g. ``reference``); its title.
        flips: Voxel axes reversed on screen (see :func:`sparseseg.viz.planes.plane`).
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


def label_legend(values: Sequence[int], names: Mapping[int, str] | None = None
                 ) -> list[tuple[Colour, str]]:
    """Legend entries of label values, named from ``names`` or ``label V``."""
    names = names or {}
    return [(label_colour(v), str(names.get(v, f"label {v}"))) for v in values if v > 0]


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
    n_cols = max((len(r) for r in grid), default=0)
    col_w = [max((r[c].width for r in grid if c < len(r) and r[c] is not None), default=0)
             for c in range(n_cols)]
    row_h = [max((p.height for p in r if p is not None), default=0) for r in grid]
    captions = list(row_captions) if row_captions is not None else [""] * len(grid)
    title_h = _TEXT_H + _MARGIN if title else 0
    caption_h = [(_TEXT_H if cap else 0) for cap in captions]
    width = max(sum(col_w) + _MARGIN * (n_cols + 1), 240)
    if title:
        width = max(width, text_width(title) + 2 * _MARGIN)
    if captions:
        width = max(width, max(text_width(c) for c in captions) + 2 * _MARGIN)
    # Legend entries flow left to right, wrapping at the figure's width.
    entries, x, y = [], _MARGIN, 0
    for colour, text in legend:
        w = 14 + 4 + text_width(text) + 14
        if x + w > width - _MARGIN and x > _MARGIN:
            x, y = _MARGIN, y + _TEXT_H + 2
        entries.append((x, y, colour, text))
        x += w
    legend_h = (y + _TEXT_H + 2 * _MARGIN) if legend else 0
    height = (title_h + sum(row_h) + sum(caption_h)
              + len(grid) * (_TEXT_H + _MARGIN) + _MARGIN + legend_h)
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = BACKGROUND
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
                pixels[p.top : p.top + p.height, p.left : p.left + p.width] = p.rgb
                placed.append(p)
            left += col_w[c] + _MARGIN
        top += _TEXT_H + row_h[r] + _MARGIN
    legend_top = top
    canvas = Canvas.from_array(pixels)
    for x0, y0, text in texts:
        canvas.text((x0, y0), text, fill=TEXT_COLOUR)
    for x0, y0, colour, text in entries:
        yy = legend_top + y0
        canvas.draw.rectangle([x0, yy + 2, x0 + 13, yy + 13], fill=tuple(colour),
                              outline=TEXT_COLOUR)
        canvas.text((x0 + 18, yy), text, fill=TEXT_COLOUR)
    return Figure(canvas.pixels(), placed)
