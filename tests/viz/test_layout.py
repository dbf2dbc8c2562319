"""Layout: panels, figures, grids with captions and legends, the shared Pillow text helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sparseseg import viz
from sparseseg.ltuda.curves import plot_curves
from sparseseg.viz import layout


def solid_panel(colour: tuple[int, int, int], shape: tuple[int, int], column: str) -> viz.Panel:
    rows, cols = np.arange(shape[0]), np.arange(shape[1])
    rgb = np.empty((*shape, 3), np.uint8)
    rgb[:] = colour
    return viz.Panel(rgb, rows, cols, "axial", 0, column)


def test_make_panel_keeps_the_physical_aspect() -> None:
    small = np.zeros((10, 20, 3), np.uint8)
    small[4, 7] = 255
    panel = viz.make_panel(small, view="coronal", index=0, column="x", spacing=(3.0, 1.0),
                           panel_px=256)
    assert (panel.height, panel.width) == (256, 171)
    assert panel.rows.min() == 0 and panel.rows.max() == 9
    assert panel.cols.min() == 0 and panel.cols.max() == 19
    lit = panel.rgb[..., 0] == 255
    assert (lit == panel.source(small[..., 0] == 255)).all()
    assert lit.sum() == (panel.rows == 4).sum() * (panel.cols == 7).sum()


def test_mark_row_ticks_both_sides_only() -> None:
    panel = viz.make_panel(np.zeros((5, 8, 3), np.uint8), view="coronal", index=0, column="x",
                           spacing=(1.0, 1.0), panel_px=64)
    viz.mark_row(panel, 2)
    hit = np.nonzero(panel.rows == 2)[0]
    assert len(hit) > 0
    white = (panel.rgb == viz.MARK_COLOUR).all(-1)
    tick = max(4, panel.width // 16)
    assert white[hit][:, :tick].all() and white[hit][:, -tick:].all()
    assert not white[hit][:, tick:-tick].any()
    assert white.sum() == len(hit) * 2 * tick  # no other row touched


def test_compose_places_panels_captions_and_legend() -> None:
    a = solid_panel((200, 0, 0), (30, 40), "first")
    b = solid_panel((0, 200, 0), (20, 50), "second")
    c = solid_panel((0, 0, 200), (25, 40), "third")
    legend = [((10, 250, 10), "swatch one"), ((250, 10, 250), "swatch two")]
    fig = viz.compose([[a, b], [c, None]], row_captions=["row one", ""], legend=legend,
                      title="A title")
    assert fig.rgb.dtype == np.uint8 and fig.rgb.ndim == 3
    assert [p.column for p in fig.panels] == ["first", "second", "third"]
    assert (fig.find("third", 1) is c) and c.row == 1 and a.row == b.row == 0
    with pytest.raises(KeyError, match="no panel 'third' in row 0"):
        fig.find("third")
    for p, colour in ((a, (200, 0, 0)), (b, (0, 200, 0)), (c, (0, 0, 200))):
        assert (p.crop(fig.rgb) == colour).all()
    assert a.top == b.top and b.left > a.left + a.width  # one row, side by side
    assert c.left == a.left and c.top > a.top + a.height  # next row, same column
    # Captions, titles and column names are written in bright text above the panels.
    above = fig.rgb[a.top - 16 : a.top, a.left : a.left + a.width]
    assert (above.min(-1) > 120).sum() > 10  # "first"
    assert (fig.rgb[: a.top - 16].min(-1) > 120).sum() > 40  # title and caption
    assert (fig.rgb[c.top - 16 : c.top, c.left + c.width :] == viz.BACKGROUND).all()
    # The legend: one filled swatch per entry under the grid.
    below = fig.rgb[c.top + c.height :]
    for colour, _ in legend:
        assert (below == colour).all(-1).sum() >= 10 * 10
    # Everything else is the background.
    assert (fig.rgb[:, -2:] == viz.BACKGROUND).all()


def test_compose_widens_for_long_text() -> None:
    p = solid_panel((1, 2, 3), (10, 10), "x")
    narrow = viz.compose([[p]])
    assert narrow.rgb.shape[1] == 240  # minimum width
    long_title = "a rather long title " * 5
    wide = viz.compose([[solid_panel((1, 2, 3), (10, 10), "x")]], title=long_title)
    assert wide.rgb.shape[1] == viz.text_width(long_title) + 2 * 6
    assert wide.rgb.shape[0] > narrow.rgb.shape[0]


def test_label_and_error_legends() -> None:
    assert viz.label_legend([0, 1, 3], {1: "liver"}) == [
        (viz.label_colour(1), "liver"), (viz.label_colour(3), "label 3")]
    assert [c for c, _ in viz.ERROR_LEGEND] == [viz.AGREE_COLOUR, viz.EXTRA_COLOUR,
                                                 viz.MISSED_COLOUR, viz.WRONG_COLOUR]


def test_shared_font_and_canvas() -> None:
    assert layout.font() is layout.font(layout.FONT_SIZE)  # one cached font per size
    assert layout.font(None) is not None
    assert viz.text_width("") == 0 < viz.text_width("i") < viz.text_width("iiii")
    canvas = layout.Canvas.blank((50, 20), viz.BACKGROUND)
    assert canvas.pixels().shape == (20, 50, 3) and (canvas.pixels() == viz.BACKGROUND).all()
    canvas.text((2, 2), "Hello", fill=viz.TEXT_COLOUR)
    pixels = canvas.pixels()
    assert (pixels.min(-1) > 120).sum() > 20  # bright (anti-aliased) text on the dark canvas
    # Text is drawn exactly as Pillow draws it with the shared font.
    want = Image.new("RGB", (50, 20), viz.BACKGROUND)
    ImageDraw.Draw(want).text((2, 2), "Hello", fill=viz.TEXT_COLOUR, font=layout.font())
    assert (np.asarray(want) == pixels).all()
    held = np.zeros((3, 4, 3), np.uint8)
    copy = layout.Canvas.from_array(held)
    copy.draw.point((0, 0), fill=(9, 9, 9))
    assert copy.pixels()[0, 0].tolist() == [9, 9, 9] and (held == 0).all()


def test_training_curves_draw_through_the_shared_canvas(tmp_path: Path) -> None:
    out = plot_curves(tmp_path / "curves.png", {"sup": [1.0, 0.5, float("nan"), 0.2]},
                      {"dice": [0.1, 0.6]})
    assert out == tmp_path / "curves.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (760, 520)
        pixels = np.asarray(img.convert("RGB"))
    first = (31, 119, 180)
    assert (pixels[30:241, 60:561] == first).all(-1).sum() > 100  # the loss line
    assert (pixels[290:501, 60:561] == first).all(-1).sum() > 100  # the Dice line
    assert (pixels[290, 60:500] == 0).all()  # the black frame of the Dice panel
    assert (pixels[:, 600:] == 255).all(-1).sum() > 0.9 * 520 * 160  # white, but for names
    # The titles are drawn in Pillow's default font, as before the shared helper.
    want = Image.new("RGB", (760, 520), "white")
    ImageDraw.Draw(want).text((65, 16), "training losses per epoch", fill=(0, 0, 0))
    assert (np.asarray(want)[16:30, 65:300] == pixels[16:30, 65:300]).all()
