"""``sparseseg evaluate --png``: pictures of prediction against reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparseseg import viz
from sparseseg.cli.main import main
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume


def run_ok(capsys: pytest.CaptureFixture, *argv: str) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def run_bad(capsys: pytest.CaptureFixture, *argv: str) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sparseseg: error: ") and "Traceback" not in err
    return lines[0]


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


@pytest.fixture
def shifted(tmp_path: Path, tiny_phantom, tiny_files) -> tuple[Path, Path, Path, np.ndarray]:
    """Image, reference and a prediction shifted by two voxels, as files."""
    _, label = tiny_phantom
    image, truth = tiny_files
    pred_array = np.roll(label.array, 2, axis=0)
    pred = write_volume(tmp_path / "pred.nii.gz", pred_array, label)
    return image, truth, pred, pred_array


def test_png_with_image(capsys, tmp_path: Path, tiny_phantom, shifted) -> None:
    image_vol, label = tiny_phantom
    image, truth, pred, pred_array = shifted
    png = tmp_path / "cmp.png"
    out = run_ok(capsys, "evaluate", "-p", str(pred), "-t", str(truth), "--png", str(png),
                 "--image", str(image))
    assert "DICE" in out  # the table is still printed
    picture = read_png(png)
    want = viz.comparison_figure(pred_array, label.array, image=image_vol.array,
                                 spacing=label.spacing, title=f"{pred.name} vs {truth.name}")
    assert picture.shape == want.rgb.shape
    assert picture.shape[0] > 4 * 200 and picture.shape[1] > 4 * 200  # 4 rows x 4 columns
    assert (picture == want.rgb).all()
    # Where the reference has a label, its panel carries that label's colour; elsewhere it is
    # the image panel's grey.
    seen = set()
    for panel in want.panels:
        if panel.column != "reference" or panel.view != "axial":
            continue
        shown = panel.source(viz.plane(label.array, "axial", panel.index))
        drawn = panel.crop(picture).astype(float)
        grey = want.find("image", panel.row).crop(picture).astype(float)
        for value in np.unique(shown[shown > 0]):
            colour = np.array(viz.label_colour(int(value)), float)
            inside = shown == value
            blend = np.rint(0.55 * grey[inside] + 0.45 * colour)
            ok = (drawn[inside] == colour).all(-1) | (np.abs(drawn[inside] - blend) <= 1).all(-1)
            assert ok.all()
            seen.add(int(value))
        assert (drawn[shown == 0] == grey[shown == 0]).all()
    assert seen == {1, 2, 3, 4}


def test_png_without_image_and_labels(capsys, tmp_path: Path, tiny_phantom, shifted) -> None:
    _, label = tiny_phantom
    _, truth, pred, pred_array = shifted
    png = tmp_path / "cmp.png"
    run_ok(capsys, "evaluate", "-p", str(pred), "-t", str(truth), "--png", str(png),
           "--labels", "1")
    picture = read_png(png)
    want = viz.comparison_figure(pred_array, label.array, spacing=label.spacing, labels=[1],
                                 title=f"{pred.name} vs {truth.name}")
    assert (picture == want.rgb).all()
    for panel in want.panels:
        if panel.column == "reference" and panel.view == "axial":
            shown = panel.source(viz.plane(label.array, "axial", panel.index))
            drawn = panel.crop(picture)
            assert (drawn[(shown != 1)] == 0).all()  # no image, other labels left out
            if (shown == 1).any():
                assert (drawn[shown == 1] != 0).any(-1).all()


def test_png_follows_the_direction_matrix(capsys, tmp_path: Path, tiny_phantom) -> None:
    image, label = tiny_phantom
    direction = np.diag([-1.0, -1.0, 1.0])  # as most NIfTI files read in LPS
    ref = Volume(label.array, label.spacing, label.origin, direction)
    truth = write_volume(tmp_path / "truth.nii.gz", label.array, ref)
    pred = write_volume(tmp_path / "pred.nii.gz", np.roll(label.array, 2, axis=1), ref)
    img = write_volume(tmp_path / "img.nii.gz", image.array, ref)
    png = tmp_path / "cmp.png"
    run_ok(capsys, "evaluate", "-p", str(pred), "-t", str(truth), "--png", str(png),
           "--image", str(img))
    kwargs = {"image": image.array, "spacing": label.spacing,
              "title": "pred.nii.gz vs truth.nii.gz"}
    want = viz.comparison_figure(np.roll(label.array, 2, axis=1), label.array,
                                 direction=direction, **kwargs)
    unflipped = viz.comparison_figure(np.roll(label.array, 2, axis=1), label.array, **kwargs)
    picture = read_png(png)
    assert (picture == want.rgb).all() and (picture != unflipped.rgb).any()


def test_folder_mode_writes_one_png_per_case(capsys, tmp_path: Path, tiny_phantom) -> None:
    image, label = tiny_phantom
    data = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir(parents=True)
    preds = tmp_path / "preds"
    preds.mkdir()
    for i, name in enumerate(["case_a", "case_b", "case_c"]):
        write_volume(data / "imagesTr" / f"{name}_0000.nii.gz", image.array, image)
        write_volume(data / "labelsTr" / f"{name}.nii.gz", label.array, label)
        if name != "case_c":  # no prediction: its picture shows everything missed
            write_volume(preds / f"{name}.nii.gz", np.roll(label.array, i, axis=0), label)
    pictures = tmp_path / "pictures"
    run_ok(capsys, "evaluate", "-p", str(preds), "-t", str(data), "--png", str(pictures),
           "--image", str(data))
    assert sorted(p.name for p in pictures.iterdir()) == ["case_a.png", "case_b.png",
                                                          "case_c.png"]
    for i, name in enumerate(["case_a", "case_b"]):
        want = viz.comparison_figure(np.roll(label.array, i, axis=0), label.array,
                                     image=image.array, spacing=label.spacing,
                                     title=f"{name}.nii.gz vs {name}.nii.gz")
        assert (read_png(pictures / f"{name}.png") == want.rgb).all()
    missing = viz.comparison_figure(label.array * 0, label.array, image=image.array,
                                    spacing=label.spacing, title="case_c: no prediction")
    got = read_png(pictures / "case_c.png")
    assert (got == missing.rgb).all()
    err = missing.find("errors", 0)
    shown = err.source(viz.plane(label.array, "axial", err.index)) > 0
    assert (err.crop(got)[shown][:, 2] > err.crop(got)[shown][:, 0]).all()  # blue: missed


def test_bad_png_paths(capsys, tmp_path: Path, shifted, tiny_phantom) -> None:
    image, truth, pred, _ = shifted
    base = ["evaluate", "-p", str(pred), "-t", str(truth)]
    missing = tmp_path / "nope" / "cmp.png"
    line = run_bad(capsys, *base, "--png", str(missing))
    assert str(missing.parent) in line and "does not exist" in line
    line = run_bad(capsys, *base, "--png", str(tmp_path / "cmp.jpg"))
    assert "cmp.jpg" in line and ".png" in line
    line = run_bad(capsys, *base, "--image", str(image))
    assert "--png" in line
    image_vol, _ = tiny_phantom
    small = Volume(image_vol.array[:-1], image_vol.spacing, image_vol.origin,
                   image_vol.direction)
    other = write_volume(tmp_path / "small.nii.gz", small.array, small)
    line = run_bad(capsys, *base, "--png", str(tmp_path / "cmp.png"), "--image", str(other))
    assert str(other) in line and "shape" in line
    assert not (tmp_path / "cmp.png").exists()
    as_file = tmp_path / "afile"
    as_file.write_text("x")
    preds = tmp_path / "preds"
    preds.mkdir()
    write_volume(preds / "label.nii.gz", image_vol.array * 0, image_vol)
    line = run_bad(capsys, "evaluate", "-p", str(preds), "-t", str(truth.parent), "--png",
                   str(as_file))
    assert str(as_file) in line and "not a folder" in line
    line = run_bad(capsys, "evaluate", "-p", str(preds), "-t", str(truth.parent), "--png",
                   str(tmp_path / "pictures"), "--image", str(image))
    assert str(image) in line and "not a folder" in line
