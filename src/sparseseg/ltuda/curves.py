"""Training curves drawn with PIL (no matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           series: Mapping[str, Sequence[float]]) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0 + 5, y0 - 14), title, fill=(0, 0, 0))
    values = [v for s in series.values() for v in s if v == v]
    if not values:
        return
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    draw.text((x0 - 45, y0), f"{hi:.3g}", fill=(0, 0, 0))
    draw.text((x0 - 45, y1 - 10), f"{lo:.3g}", fill=(0, 0, 0))
    for i, (name, ys) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        n = max(len(ys) - 1, 1)
        pts = [(x0 + (x1 - x0) * j / n, y1 - (y1 - y0) * (y - lo) / (hi - lo))
               for j, y in enumerate(ys) if y == y]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
        draw.text((x1 + 8, y0 + 14 * i), name, fill=colour)


def plot_curves(path: str | Path, losses: Mapping[str, Sequence[float]],
                scores: Mapping[str, Sequence[float]]) -> Path:
    """Draw losses (top) and validation Dice (bottom) against epochs into a PNG.

    Args:
        path: Output PNG.
        losses: Name -> value per epoch.
        scores: Name -> validation Dice per epoch.
    """
    image = Image.new("RGB", (760, 520), "white")
    draw = ImageDraw.Draw(image)
    _panel(draw, (60, 30, 560, 240), "training losses per epoch", losses)
    _panel(draw, (60, 290, 560, 500), "validation Dice per epoch", scores)
    path = Path(path)
    image.save(path)
    return path
