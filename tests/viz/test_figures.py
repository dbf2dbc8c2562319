"""Figures: slice choice, comparison, side-by-side and preview figures, the slice Dice."""

from __future__ import annotations

import numpy as np
import pytest

from sparseseg import viz
from sparseseg.metrics import dice
from sparseseg.viz.figures import _slice_dice


def assert_label_colour(drawn: np.ndarray, under: np.ndarray, value: int) -> None:
    """Each pixel is ``value``'s colour (outline) or that colour blended over ``under`` (fill)."""
    colour = np.array(viz.label_colour(value), float)
    blend = np.rint(0.55 * under.astype(float) + 0.45 * colour)
    exact = (drawn == colour).all(-1)
    blended = (np.abs(drawn - blend) <= 1).all(-1)
    assert (exact | blended).all()
    assert exact.any() and blended.any()


def box_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, reference (two labels) and a prediction shifted by two voxels along i."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 20.0, (30, 24, 10)).astype(np.float32)
    truth = np.zeros((30, 24, 10), np.uint8)
    truth[5:15, 4:16, 2:8] = 1
    truth[18:26, 8:18, 3:9] = 2
    truth[18:20, 8:18, 6] = 0  # slice 6 has the largest label-1 + label-2 area minus a bit
    pred = np.roll(truth, 2, axis=0)
    return image, truth, pred


def test_figures_use_the_radiological_orientation() -> None:
    image, truth, pred = box_volume()
    flip = np.diag([-1.0, -1.0, 1.0])
    fig = viz.comparison_figure(pred, truth, image=image, direction=flip, panel_px=80)
    plain = viz.comparison_figure(pred, truth, image=image, panel_px=80)
    assert fig.rgb.shape == plain.rgb.shape and (fig.rgb != plain.rgb).any()
    for p in fig.panels:
        assert p.flips == (True, True, False)
        if p.column == "reference" and p.view == "axial":
            crop = p.crop(fig.rgb)
            shown = p.source(viz.plane(truth, "axial", p.index, p.flips))
            mirrored = p.source(viz.plane(truth, "axial", p.index))
            assert (crop[shown == 0] == fig.find("image", p.row).crop(fig.rgb)[shown == 0]).all()
            assert (shown != mirrored).any()


def test_representative_slices() -> None:
    _, truth, pred = box_volume()
    picks = viz.representative_slices(pred, truth, n=3)
    area = (truth > 0).sum(axis=(0, 1))
    wrong = (pred != truth).sum(axis=(0, 1))
    indices = [k for k, _ in picks]
    assert len(picks) == 3 and indices == sorted(indices)
    assert int(np.argmax(area)) in indices
    assert any("disagree" in why for _, why in picks)
    for k, why in picks:
        if "disagree" in why:
            assert wrong[k] > 0
    # Disagreement picks are spread out: a lesser error far away beats the neighbours of the
    # worst slice.
    ref = np.zeros((10, 10, 40), np.uint8)
    ref[2:8, 2:8, 5:35] = 1
    bad = ref.copy()
    bad[2:8, 2:8, 10:14] = 0  # 36 wrong voxels on each of slices 10-13
    bad[2:5, 2:8, 30] = 0  # 18 wrong voxels on slice 30
    spread = [k for k, _ in viz.representative_slices(bad, ref, n=3)]
    assert spread[0] == 5 and 10 <= spread[1] <= 13 and spread[2] == 30
    # Perfect agreement: the rest is spread over the reference's extent.
    agree = viz.representative_slices(truth, truth, n=3)
    assert len(agree) == 3
    assert all(2 <= k <= 8 for k, _ in agree)
    # Nothing anywhere: still one slice to show.
    empty = np.zeros((4, 4, 5), np.uint8)
    assert len(viz.representative_slices(empty, empty, n=2)) == 2


def test_comparison_figure_panels_show_the_labels() -> None:
    image, truth, pred = box_volume()
    fig = viz.comparison_figure(pred, truth, image=image, spacing=(1.0, 1.0, 2.5), n_slices=2,
                                annotated=4, panel_px=120)
    rows = sorted({p.row for p in fig.panels})
    assert len(rows) == 4  # two representative slices + annotated slice 4 + coronal
    assert {p.column for p in fig.panels} == {"image", "reference", "prediction", "errors"}
    coronal = [p for p in fig.panels if p.view == "coronal"]
    assert len(coronal) == 4
    assert 4 in {p.index for p in fig.panels if p.view == "axial"}
    # The annotated slice is marked by white ticks at both sides of every coronal panel.
    mark = np.nonzero(coronal[0].rows == viz.slice_row(truth.shape[2], 4))[0]
    assert len(mark) > 0
    for p in coronal:
        white = (p.crop(fig.rgb) == viz.MARK_COLOUR).all(-1)
        assert white[mark][:, :4].all() and white[mark][:, -4:].all()
        assert not white[mark][:, p.width // 2].any()
    # The legend under the grid holds a swatch of each label and error colour.
    under = fig.rgb[max(p.top + p.height for p in fig.panels):]
    for colour in (viz.label_colour(1), viz.label_colour(2), *(c for c, _ in viz.ERROR_LEGEND)):
        assert (under == colour).all(-1).sum() >= 100, colour
    for row in rows:
        ref = fig.find("reference", row)
        if ref.view != "axial":
            continue
        crop = ref.crop(fig.rgb)
        img = fig.find("image", row).crop(fig.rgb)
        assert (crop == ref.rgb).all()
        shown = ref.source(viz.plane(truth, "axial", ref.index))
        assert shown.any()
        for value in (1, 2):
            inside = shown == value
            if inside.any():
                assert_label_colour(crop[inside], img[inside], value)
        # Outside the labels the reference panel is the plain grey image panel.
        assert (crop[shown == 0] == img[shown == 0]).all()
        # Missed voxels (reference, not prediction) are blue in the error map.
        err = fig.find("errors", row).crop(fig.rgb).astype(int)
        missed = ref.source(viz.plane((truth > 0) & (pred == 0), "axial", ref.index))
        if missed.any():
            blue = err[missed]
            assert (blue[:, 2] > blue[:, 0]).all()
    assert fig.rgb.dtype == np.uint8 and fig.rgb.ndim == 3


def test_comparison_figure_without_image_and_label_subset() -> None:
    _, truth, pred = box_volume()
    fig = viz.comparison_figure(pred, truth, labels=[2], orthogonal=False, panel_px=64)
    assert "image" not in {p.column for p in fig.panels}
    for p in fig.panels:
        if p.column == "reference":
            shown = p.source(viz.plane(truth, "axial", p.index))
            crop = p.crop(fig.rgb)
            assert (crop[shown == 1] == 0).all()  # label 1 left out: black background
            assert (crop[shown == 0] == 0).all()
    # Only label 2's colour is in the legend.
    under = fig.rgb[max(p.top + p.height for p in fig.panels):]
    assert (under == viz.label_colour(2)).all(-1).sum() >= 100
    assert not (under == viz.label_colour(1)).all(-1).any()
    with pytest.raises(ValueError, match="differ in shape"):
        viz.comparison_figure(pred[:-1], truth)
    with pytest.raises(ValueError, match="3D"):
        viz.comparison_figure(pred[..., 0], truth[..., 0])


def test_slice_dice_is_the_metrics_dice_over_all_labels() -> None:
    truth = np.array([[1, 1, 0, 2, 2, 0]])
    same = truth.copy()
    assert _slice_dice(same, truth) == 1.0
    # One label: exactly sparseseg.metrics.dice.
    a, b = np.array([[1, 1, 1, 0]]), np.array([[0, 1, 1, 1]])
    assert _slice_dice(a, b) == dice(a > 0, b > 0) == pytest.approx(2 / 3)
    # Voxels labelled in both but with different labels are no overlap.
    swapped = np.array([[2, 2, 0, 1, 1, 0]])
    assert _slice_dice(swapped, truth) == 0.0
    half = np.array([[1, 1, 0, 1, 1, 0]])
    assert _slice_dice(half, truth) == pytest.approx(2 * 2 / 8)
    # Edge cases: both empty is a perfect score (as before metrics.dice was used); one empty 0.
    empty = np.zeros_like(truth)
    assert _slice_dice(empty, empty) == 1.0
    assert _slice_dice(empty, truth) == 0.0 and _slice_dice(truth, empty) == 0.0


def test_comparison_caption_reports_the_slice_dice() -> None:
    _, truth, pred = box_volume()
    kwargs = {"n_slices": 1, "orthogonal": False, "panel_px": 64}
    fig = viz.comparison_figure(pred, truth, **kwargs)
    (k,) = {p.index for p in fig.panels}
    ps, ts = viz.plane(pred, "axial", k), viz.plane(truth, "axial", k)
    want = 2 * ((ps == ts) & (ts > 0)).sum() / ((ps > 0).sum() + (ts > 0).sum())
    assert _slice_dice(ps, ts) == pytest.approx(want) and 0 < want < 1
    # Giving the overlapping voxels the wrong label changes the caption's Dice (its pixels).
    worse = pred.copy()
    worse[..., k] = np.where(worse[..., k] == 1, 2, worse[..., k])
    other = viz.comparison_figure(worse, truth, **kwargs)
    assert {p.index for p in other.panels} == {k}
    caption_rows = slice(0, fig.panels[0].top - 16)
    assert (other.rgb[caption_rows] != fig.rgb[caption_rows]).any()
    assert (viz.comparison_figure(pred, truth, **kwargs).rgb == fig.rgb).all()  # deterministic


def test_side_by_side_outlines_the_reference() -> None:
    image, truth, pred = box_volume()
    fig = viz.side_by_side({"truth": truth, "copy": pred}, slices=[5], image=image,
                           reference="truth", panel_px=90)
    assert [p.column for p in fig.panels] == ["image", "truth", "copy"]
    copy = fig.find("copy")
    edge = copy.source(viz.contour(viz.plane(truth, "axial", 5) > 0))
    assert (copy.crop(fig.rgb)[edge] == viz.MARK_COLOUR).all()
    # The reference itself is not outlined in white, only drawn in its label colours.
    own = fig.find("truth")
    assert not (own.crop(fig.rgb)[own.source(viz.contour(viz.plane(truth, "axial", 5) > 0))]
                == viz.MARK_COLOUR).all(-1).any()
    # The legend has the outline's white swatch.
    under = fig.rgb[copy.top + copy.height :]
    assert (under == viz.MARK_COLOUR).all(-1).sum() >= 100
    with pytest.raises(ValueError, match="reference 'other'"):
        viz.side_by_side({"truth": truth}, slices=[1], reference="other")
    with pytest.raises(ValueError, match="at least one"):
        viz.side_by_side({}, slices=[1])


def test_side_by_side_rows_and_coronal_plane() -> None:
    _, truth, pred = box_volume()
    fig = viz.side_by_side({"a": truth, "b": pred}, slices=[3, 6], orthogonal=True,
                           captions={6: "six"}, panel_px=60)
    assert [(p.row, p.view, p.index) for p in fig.panels if p.column == "a"] == [
        (0, "axial", 3), (1, "axial", 6), (2, "coronal", viz.centre_index(truth > 0, 1))]
    for p in fig.panels:
        shown = p.source(viz.plane(truth if p.column == "a" else pred, p.view, p.index))
        crop = p.crop(fig.rgb)
        for value in (1, 2):
            if (shown == value).any():  # black background: fill or outline of the label
                drawn = crop[shown == value].astype(int)
                colour = np.array(viz.label_colour(value))
                ok = (drawn == colour).all(-1) | (np.abs(drawn - np.rint(0.45 * colour)) <= 1
                                                  ).all(-1)
                assert ok.all()
        assert (crop[shown == 0] == 0).all()


def test_preview_includes_the_annotated_slice_and_planes() -> None:
    image, truth, _ = box_volume()
    assert viz.preview_slices(truth, 4) == [3, 4, 6, 7]
    assert 2 in viz.preview_slices(truth, 4, annotated=2)
    fig = viz.preview_figure(truth, image=image, spacing=(1.0, 1.0, 3.0), annotated=2,
                             names={1: "liver"}, panel_px=100)
    axial = [p for p in fig.panels if p.view == "axial"]
    assert len(axial) == 4 and 2 in [p.index for p in axial]
    assert {p.view for p in fig.panels if p.row == 1} == {"coronal", "sagittal"}
    sag = next(p for p in fig.panels if p.view == "sagittal")
    assert sag.height > sag.width  # 10 slices x 3 mm against 24 x 1 mm
    for p in axial:
        shown = p.source(viz.plane(truth, "axial", p.index))
        crop = p.crop(fig.rgb)
        img2d = viz.plane(image, "axial", p.index)
        under = p.source(viz.grey(img2d, img2d.shape, viz.intensity_limits(image)))
        for value in (1, 2):
            if (shown == value).any():
                assert_label_colour(crop[shown == value], under[shown == value], value)
    # The annotated slice is marked at both sides of the coronal plane, and only there.
    cor = next(p for p in fig.panels if p.view == "coronal")
    rows = np.nonzero(cor.rows == truth.shape[2] - 1 - 2)[0]
    crop = cor.crop(fig.rgb)
    white = (crop == viz.MARK_COLOUR).all(-1)
    assert white[rows][:, [0, 3, -4, -1]].all()
    assert not white[rows][:, cor.width // 2].any()
    plain = viz.preview_figure(truth, image=image, spacing=(1.0, 1.0, 3.0), panel_px=100)
    plain_cor = next(p for p in plain.panels if p.view == "coronal")
    changed = np.nonzero((plain_cor.crop(plain.rgb) != crop).any(-1).any(-1))[0]
    assert set(changed.tolist()) <= set(rows.tolist())


def test_preview_slices_of_thin_or_empty_labels() -> None:
    label = np.zeros((4, 4, 20), np.uint8)
    label[1:3, 1:3, 5:7] = 1
    assert viz.preview_slices(label, 4) == [5, 6]  # fewer slices than asked: all of them
    assert viz.preview_slices(label, 4, annotated=15) in ([5, 15], [6, 15])
    assert viz.preview_slices(np.zeros((4, 4, 9), np.uint8), 2) == [3, 5]
    assert viz.preview_slices(label, 0, annotated=2) == [2]
    assert viz.centre_index(label > 0, 2) == 6 and viz.centre_index(label * 0 > 0, 2) == 10
