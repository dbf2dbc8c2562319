"""Training curves drawn with PIL (no matplotlib), through the shared canvas of ``viz.layout``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sparseseg.viz.layout import Canvas

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]
_INK = (0, 0, 0)
_FONT_SIZE = None
"""Pillow's default font size (what ``ImageDraw.text`` uses without a font)."""


def _panel(canvas: Canvas, box: tuple[int, int, int, int], title: str,
           series: Mapping[str, Sequence[float]]) -> None:
    x0, y0, x1, y1 = box
    draw = canvas.draw
    draw.rectangle(box, outline=_INK)
    canvas.text((x0 + 5, y0 - 14), title, fill=_INK, size=_FONT_SIZE)
    values = [v for s in series.values() for v in s if v == v]
    if not values:
        return
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    canvas.text((x0 - 45, y0), f"{hi:.3g}", fill=_INK, size=_FONT_SIZE)
    canvas.text((x0 - 45, y1 - 10), f"{lo:.3g}", fill=_INK, size=_FONT_SIZE)
    for i, (name, ys) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        n = max(len(ys) - 1, 1)
        pts = [(x0 + (x1 - x0) * j / n, y1 - (y1 - y0) * (y - lo) / (hi - lo))
               for j, y in enumerate(ys) if y == y]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
        canvas.text((x1 + 8, y0 + 14 * i), name, fill=colour, size=_FONT_SIZE)


def plot_curves(path: str | Path, losses: Mapping[str, Sequence[float]],
                scores: Mapping[str, Sequence[float]]) -> Path:
    """Draw losses (top) and validation Dice (bottom) against epochs into a PNG.

    Args:
        path: Output PNG.
        losses: Name -> value per epoch.
        scores: Name -> validation Dice per epoch.

    Returns:
        ``path``.
    """
    canvas = Canvas.blank((760, 520), "white")
    _panel(canvas, (60, 30, 560, 240), "training losses per epoch", losses)
    _panel(canvas, (60, 290, 560, 500), "validation Dice per epoch", scores)
    path = Path(path)
    canvas.image.save(path)
    return path
