"""Pictures of label volumes: colours, planes, slice choice, figures and PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparseseg import viz
from sparseseg.errors import InputError


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


def test_label_colours_are_fixed_and_cycle() -> None:
    assert viz.label_colour(1) == tuple(int(c) for c in viz.PALETTE[0])
    assert viz.label_colour(2) != viz.label_colour(1)
    assert viz.label_colour(1 + len(viz.PALETTE)) == viz.label_colour(1)
    with pytest.raises(ValueError):
        viz.label_colour(0)


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


def test_error_map_colours() -> None:
    truth = np.array([[1, 1, 0, 2]])
    pred = np.array([[1, 0, 1, 1]])
    cats = viz.error_categories(pred, truth)
    assert cats["agree"].tolist() == [[True, False, False, False]]
    assert cats["missed"].tolist() == [[False, True, False, False]]
    assert cats["extra"].tolist() == [[False, False, True, False]]
    assert cats["wrong"].tolist() == [[False, False, False, True]]
    out = viz.errors(np.zeros((1, 4, 3)), pred, truth, alpha=1.0)
    assert [tuple(p) for p in out[0]] == [viz.AGREE_COLOUR, viz.MISSED_COLOUR,
                                          viz.EXTRA_COLOUR, viz.WRONG_COLOUR]


def test_planes_are_oriented_and_spaced() -> None:
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert viz.plane(vol, "axial", 1).tolist() == vol[:, :, 1].T.tolist()
    coronal = viz.plane(vol, "coronal", 2)
    assert coronal.shape == (4, 2) and coronal[0, 0] == vol[0, 2, 3]  # top row = last k
    sagittal = viz.plane(vol, "sagittal", 1)
    assert sagittal.shape == (4, 3) and sagittal[-1, 2] == vol[1, 2, 0]
    assert viz.plane_spacing((1.0, 2.0, 3.0), "axial") == (2.0, 1.0)
    assert viz.plane_spacing((1.0, 2.0, 3.0), "coronal") == (3.0, 1.0)
    assert viz.plane_spacing((1.0, 2.0, 3.0), "sagittal") == (3.0, 2.0)
    with pytest.raises(ValueError):
        viz.plane(vol, "oblique", 0)


def test_display_flips_follow_the_direction_matrix() -> None:
    assert viz.display_flips(None) == (False, False, False)
    assert viz.display_flips(np.eye(3)) == (False, False, False)
    assert viz.display_flips(np.diag([-1.0, -1.0, 1.0])) == (True, True, False)
    assert viz.display_flips(np.diag([1.0, 1.0, -1.0])) == (False, False, True)
    permuted = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    assert viz.display_flips(permuted) == (False, False, False)  # shown in voxel axes
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    flipped = viz.plane(vol, "axial", 1, (True, True, False))
    assert flipped.tolist() == vol[::-1, ::-1, 1].T.tolist()
    coronal = viz.plane(vol, "coronal", 0, (False, False, True))
    assert coronal[0, 0] == vol[0, 0, 0]  # k reversed: slice 0 on top
    assert viz.slice_row(4, 0) == 3 and viz.slice_row(4, 0, (False, False, True)) == 0


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


def test_panels_keep_the_physical_aspect() -> None:
    assert viz.display_size((10, 20), (3.0, 1.0), 256) == (256, 171)
    assert viz.display_size((20, 117), (3.0, 3.0), 256) == (64, 256)  # stretched to 1/4
    assert viz.display_size((20, 117), (3.0, 3.0), 256, min_ratio=0.0) == (44, 256)
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
    with pytest.raises(ValueError):
        viz.comparison_figure(pred[:-1], truth)


def test_side_by_side_outlines_the_reference() -> None:
    image, truth, pred = box_volume()
    fig = viz.side_by_side({"truth": truth, "copy": pred}, slices=[5], image=image,
                           reference="truth", panel_px=90)
    assert [p.column for p in fig.panels] == ["image", "truth", "copy"]
    copy = fig.find("copy")
    edge = copy.source(viz.contour(viz.plane(truth, "axial", 5) > 0))
    assert (copy.crop(fig.rgb)[edge] == viz.MARK_COLOUR).all()
    with pytest.raises(ValueError):
        viz.side_by_side({"truth": truth}, slices=[1], reference="other")


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


def test_write_png_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, truth, pred = box_volume()
    fig = viz.comparison_figure(pred, truth, panel_px=64)
    out = viz.write_png(tmp_path / "fig.png", fig)
    with Image.open(out) as img:
        assert img.size == (fig.rgb.shape[1], fig.rgb.shape[0])
        assert (np.asarray(img.convert("RGB")) == fig.rgb).all()
    before = out.read_bytes()

    def broken_save(self, fp, *args, **kwargs) -> None:
        Path(fp).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(InputError, match="cannot write"):
        viz.write_png(out, np.zeros((4, 4, 3), np.uint8))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("fig.jpg", "must be a .png"), ("missing/fig.png", "does not exist"), ("adir.png", "folder")],
)
def test_bad_png_paths(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / "adir.png").mkdir()
    with pytest.raises(InputError, match=problem):
        viz.write_png(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        viz.write_png(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
