"""Painting planes: label colours, grey images, fills, outlines and error maps."""

from __future__ import annotations

import numpy as np
import pytest

from sparseseg import viz


def test_label_colours_are_fixed_and_cycle() -> None:
    assert viz.label_colour(1) == tuple(int(c) for c in viz.PALETTE[0])
    assert viz.label_colour(2) != viz.label_colour(1)
    assert viz.label_colour(1 + len(viz.PALETTE)) == viz.label_colour(1)
    assert len({viz.label_colour(v) for v in range(1, len(viz.PALETTE) + 1)}) == len(viz.PALETTE)
    with pytest.raises(ValueError, match="start at 1"):
        viz.label_colour(0)


def test_intensity_limits_are_percentiles_of_finite_voxels() -> None:
    image = np.arange(101, dtype=np.float32)
    assert viz.intensity_limits(image) == pytest.approx((1.0, 99.0))
    assert viz.intensity_limits(image, 0, 100) == pytest.approx((0.0, 100.0))
    with_nan = np.concatenate([image, [np.nan, np.inf, -np.inf]])
    assert viz.intensity_limits(with_nan) == pytest.approx((1.0, 99.0))
    assert viz.intensity_limits(np.full(4, np.nan)) == (0.0, 1.0)


def test_grey_scales_the_window_to_0_255() -> None:
    plane = np.array([[0.0, 5.0, 10.0, 20.0]], np.float32)
    rgb = viz.grey(plane, (1, 4), (0.0, 10.0))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0.0, 127.5, 255.0, 255.0]  # clipped above the window
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert (viz.grey(None, (2, 3)) == 0).all() and viz.grey(None, (2, 3)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="differs from label plane"):
        viz.grey(plane, (4, 1))


def test_fill_colours_labels_and_keeps_background() -> None:
    base = np.full((12, 12, 3), 100.0)
    label = np.zeros((12, 12), np.uint8)
    label[2:8, 2:8] = 1
    label[9:11, 9:11] = 3
    out = viz.fill(base, label, alpha=0.5)
    assert out.dtype == np.uint8
    assert (out[label == 0] == 100).all()
    inner = np.zeros_like(label, bool)
    inner[3:7, 3:7] = True
    want = np.rint(0.5 * 100 + 0.5 * np.array(viz.label_colour(1))).astype(np.uint8)
    assert (out[inner] == want).all()
    edge = viz.contour(label == 1)
    assert edge.sum() == 20  # the 6 x 6 square's border
    assert (out[edge] == viz.label_colour(1)).all()
    assert (out[viz.contour(label == 3)] == viz.label_colour(3)).all()
    no_outline = viz.fill(base, label, alpha=0.5, outline=False)
    assert (no_outline[label == 1] == want).all()


def test_contour_is_the_4_neighbour_border() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    edge = viz.contour(mask)
    assert edge.sum() == 8 and not edge[2, 2]
    full = np.ones((3, 3), bool)
    assert viz.contour(full).sum() == 8  # the plane's border counts as outside
    assert not viz.contour(np.zeros((3, 3), bool)).any()


def test_outline_draws_one_opaque_colour() -> None:
    base = np.full((6, 6, 3), 40, np.uint8)
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    out = viz.outline(base, mask)
    edge = viz.contour(mask)
    assert (out[edge] == viz.MARK_COLOUR).all()
    assert (out[~edge] == 40).all() and out.dtype == np.uint8
    assert (viz.outline(base, mask, (1, 2, 3))[edge] == (1, 2, 3)).all()
    assert (base == 40).all()  # the input is not drawn on


def test_error_map_colours() -> None:
    truth = np.array([[1, 1, 0, 2, 0]])
    pred = np.array([[1, 0, 1, 1, 0]])
    cats = viz.error_categories(pred, truth)
    assert cats["agree"].tolist() == [[True, False, False, False, False]]
    assert cats["missed"].tolist() == [[False, True, False, False, False]]
    assert cats["extra"].tolist() == [[False, False, True, False, False]]
    assert cats["wrong"].tolist() == [[False, False, False, True, False]]
    out = viz.errors(np.zeros((1, 5, 3)), pred, truth, alpha=1.0)
    assert [tuple(p) for p in out[0]] == [viz.AGREE_COLOUR, viz.MISSED_COLOUR,
                                          viz.EXTRA_COLOUR, viz.WRONG_COLOUR, (0, 0, 0)]
    blended = viz.errors(np.full((1, 5, 3), 100.0), pred, truth)  # default alpha 0.6
    want = np.rint(0.4 * 100 + 0.6 * np.array(viz.AGREE_COLOUR))
    assert blended[0, 0].tolist() == want.tolist() and blended[0, 4].tolist() == [100] * 3
