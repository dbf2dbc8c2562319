"""Tiny line and bar charts drawn with Pillow (matplotlib is not a dependency).

Each function returns an ``(H, W, 3)`` uint8 picture; :func:`save` writes it atomically.
Canvases, fonts and text come from :mod:`sparseseg.viz.layout`, as in the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sparseseg.viz import PALETTE, write_png
from sparseseg.viz.layout import Canvas, font

WHITE = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
TEXT_SIZE = 13
"""Font size of axis labels, ticks and legends (titles are 15, bar values 11)."""


def colour(i: int) -> tuple[int, int, int]:
    """The ``i``-th series colour."""
    r, g, b = PALETTE[i % len(PALETTE)]
    return int(r), int(g), int(b)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    if ticks[0] > lo:
        ticks.insert(0, ticks[0] - step)
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


class _Axes:
    """Mapping of data to pixels plus the frame, grid and labels around a plot area."""

    def __init__(self, canvas: Canvas, size: tuple[int, int], *, title: str,
                 xlabel: str, ylabel: str, x_range: tuple[float, float],
                 y_range: tuple[float, float], log_x: bool = False, log_y: bool = False,
                 legend_width: int = 0) -> None:
        self.canvas, self.draw = canvas, canvas.draw
        width, height = size
        self.left, self.right = 70, width - 20 - legend_width
        self.top, self.bottom = 54, height - 55
        self.log_x, self.log_y = log_x, log_y
        self.x0, self.x1 = (math.log10(v) for v in x_range) if log_x else x_range
        self.y0, self.y1 = (math.log10(v) for v in y_range) if log_y else y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1
        canvas.text((self.left, 8), title, fill=INK, size=15)
        canvas.text(((self.left + self.right) // 2 - 4 * len(xlabel), height - 25), xlabel,
                    fill=INK, size=TEXT_SIZE)
        canvas.text((8, self.top - 22), ylabel, fill=INK, size=TEXT_SIZE)

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Pixel of a data point."""
        if self.log_x:
            x = math.log10(max(x, 1e-300))
        if self.log_y:
            y = math.log10(max(y, 1e-300))
        u = self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)
        v = self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)
        return u, v

    def frame(self, xticks: Sequence[float], yticks: Sequence[float],
              xtick_labels: Sequence[str] | None = None) -> None:
        """Grid lines, ticks with labels, and the frame."""
        d = self.draw
        for i, t in enumerate(xticks):
            u, _ = self.px(t, self._ymin())
            if self.left - 1 <= u <= self.right + 1:
                d.line([(u, self.top), (u, self.bottom)], fill=GRID)
                text = xtick_labels[i] if xtick_labels is not None else _fmt(t)
                self.canvas.text((u - 3 * len(text), self.bottom + 6), text, fill=INK,
                                 size=TEXT_SIZE)
        for t in yticks:
            _, v = self.px(self._xmin(), t)
            if self.top - 1 <= v <= self.bottom + 1:
                d.line([(self.left, v), (self.right, v)], fill=GRID)
                text = _fmt(t)
                self.canvas.text((self.left - 8 - 7 * len(text), v - 7), text, fill=INK,
                                 size=TEXT_SIZE)
        d.rectangle([self.left, self.top, self.right, self.bottom], outline=INK)

    def _xmin(self) -> float:
        return 10**self.x0 if self.log_x else self.x0

    def _ymin(self) -> float:
        return 10**self.y0 if self.log_y else self.y0

    def legend(self, names: Sequence[str], x: int) -> None:
        """Colour key of the series, from ``x`` at the top."""
        for i, name in enumerate(names):
            y = self.top + 4 + 20 * i
            self.draw.rectangle([x, y + 2, x + 14, y + 14], fill=colour(i), outline=INK)
            self.canvas.text((x + 20, y), name, fill=INK, size=TEXT_SIZE)


def _legend_width(names: Sequence[str]) -> int:
    return 40 + max((int(font(TEXT_SIZE).getbbox(n)[2]) for n in names), default=0)


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    y_range: tuple[float, float] | None = None,
    log_x: bool = False,
    log_y: bool = False,
    size: tuple[int, int] = (760, 460),
) -> np.ndarray:
    """Lines with point markers, one per named ``(x values, y values)`` series.

    Non-finite points are skipped (the line breaks there).
    """
    names = list(series)
    xs = [x for xv, _ in series.values() for x in xv if math.isfinite(x)]
    ys = [y for _, yv in series.values() for y in yv if math.isfinite(y)]
    if log_x:
        xs = [x for x in xs if x > 0]
    if log_y:
        ys = [y for y in ys if y > 0]
    xs, ys = xs or [0.0, 1.0], ys or [0.0, 1.0]
    xticks = _log_ticks(min(xs), max(xs)) if log_x else nice_ticks(min(xs), max(xs))
    if y_range is not None:
        yticks = nice_ticks(*y_range)
    elif log_y:
        yticks = _log_ticks(min(ys), max(ys))
    else:
        yticks = nice_ticks(min(0.0, min(ys)), max(ys))
    canvas = Canvas.blank(size, WHITE)
    draw = canvas.draw
    axes = _Axes(canvas, size, title=title, xlabel=xlabel, ylabel=ylabel,
                 x_range=(xticks[0], xticks[-1]),
                 y_range=y_range or (yticks[0], yticks[-1]), log_x=log_x, log_y=log_y,
                 legend_width=_legend_width(names))
    axes.frame(xticks, yticks)
    for i, (xv, yv) in enumerate(series.values()):
        points: list[tuple[float, float]] = []
        for x, y in zip(xv, yv, strict=True):
            ok = math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)
            ok = ok and (y > 0 or not log_y)
            if not ok:
                if len(points) > 1:
                    draw.line(points, fill=colour(i), width=2)
                points = []
                continue
            points.append(axes.px(x, y))
        if len(points) > 1:
            draw.line(points, fill=colour(i), width=2)
        for x, y in zip(xv, yv, strict=True):
            if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x) and (
                    y > 0 or not log_y):
                u, v = axes.px(x, y)
                draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=colour(i))
    axes.legend(names, axes.right + 12)
    return canvas.pixels()


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    y_range: tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Grouped bars: one group per entry of ``groups``, one bar per series within a group.

    Each bar's value is written above it; NaN bars are left out.
    """
    names = list(series)
    values = [v for vs in series.values() for v in vs if math.isfinite(v)] or [0.0, 1.0]
    yticks = nice_ticks(*y_range) if y_range is not None else nice_ticks(
        min(0.0, min(values)), max(values))
    if size is None:
        size = (max(560, 110 + len(groups) * (28 * len(names) + 30) + _legend_width(names)), 460)
    canvas = Canvas.blank(size, WHITE)
    draw = canvas.draw
    n_groups = len(groups)
    axes = _Axes(canvas, size, title=title, xlabel="", ylabel=ylabel, x_range=(0, n_groups),
                 y_range=y_range or (yticks[0], yticks[-1]), legend_width=_legend_width(names))
    centres = [g + 0.5 for g in range(n_groups)]
    axes.frame(centres, yticks, xtick_labels=list(groups))
    group_px = (axes.right - axes.left) / max(n_groups, 1)
    bar_w = 0.8 * group_px / max(len(names), 1)
    base = max(axes.y0, 0.0)
    for i, vals in enumerate(series.values()):
        for g, value in enumerate(vals):
            if not math.isfinite(value):
                continue
            left = axes.left + g * group_px + 0.1 * group_px + i * bar_w
            _, top = axes.px(0, value)
            _, bottom = axes.px(0, base)
            draw.rectangle([left, min(top, bottom), left + bar_w - 2, max(top, bottom)],
                           fill=colour(i), outline=INK)
            canvas.text((left, min(top, bottom) - 13), f"{value:.2f}", fill=INK, size=11)
    axes.legend(names, axes.right + 12)
    return canvas.pixels()


def save(path: str | Path, picture: np.ndarray) -> Path:
    """Write a chart as a PNG (atomically)."""
    return write_png(path, picture)
