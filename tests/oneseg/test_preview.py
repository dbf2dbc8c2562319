"""``oneseg propagate --preview``: a PNG of the propagated label over the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparseseg import oneseg, viz
from sparseseg.cli.main import main
from sparseseg.errors import InputError
from sparseseg.io import Volume, read_label, read_volume, write_volume


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


@pytest.fixture
def annotation(phantom_folder: Path, tmp_path: Path) -> tuple[Path, int]:
    """The test phantom's label on its fullest slice only, as a file."""
    truth = read_label(phantom_folder / "label.nii.gz")
    k = int(np.argmax((truth.array > 0).sum(axis=(0, 1))))
    ann = np.zeros_like(truth.array)
    ann[:, :, k] = truth.array[:, :, k]
    return write_volume(tmp_path / "ann.nii.gz", ann, truth), k


def test_cli_preview(tiny_model, phantom_folder, annotation, tmp_path, capsys) -> None:
    ann, k = annotation
    out, png = tmp_path / "out.nii.gz", tmp_path / "preview.png"
    image_file = phantom_folder / "image.nii.gz"
    code = main(["-q", "oneseg", "propagate", "-m", str(tiny_model), "-i", str(image_file),
                 "-a", str(ann), "-o", str(out), "--preview", str(png)])
    assert code == 0, capsys.readouterr().err
    result = read_label(out)
    image = read_volume(image_file)
    picture = read_png(png)
    want = viz.preview_figure(result.array, image=image.array, spacing=image.spacing,
                              annotated=k, title=f"image.nii.gz: propagated from slice k={k}")
    assert picture.shape == want.rgb.shape
    assert (picture == want.rgb).all()
    axial = [p for p in want.panels if p.view == "axial"]
    assert k in [p.index for p in axial] and len(axial) == 4
    assert {p.view for p in want.panels} == {"axial", "coronal", "sagittal"}
    limits = viz.intensity_limits(image.array)
    coloured = set()
    for panel in axial:
        shown = panel.source(viz.plane(result.array, "axial", panel.index))
        img2d = viz.plane(image.array, "axial", panel.index)
        under = panel.source(viz.grey(img2d, img2d.shape, limits))
        drawn = panel.crop(picture).astype(float)
        for value in np.unique(shown[shown > 0]):
            colour = np.array(viz.label_colour(int(value)), float)
            inside = shown == value
            blend = np.rint(0.55 * under[inside] + 0.45 * colour)
            exact = (drawn[inside] == colour).all(-1)
            assert (exact | (np.abs(drawn[inside] - blend) <= 1).all(-1)).all()
            coloured.add(int(value))
        assert (np.abs(drawn[shown == 0] - np.rint(under[shown == 0])) <= 1).all()
    assert coloured == set(np.unique(result.array[result.array > 0]).tolist())


def test_api_preview_with_a_baseline(phantom_folder, annotation, tmp_path) -> None:
    ann, k = annotation
    png = tmp_path / "copy.png"
    result = oneseg.propagate(image=phantom_folder / "image.nii.gz", annotation=ann,
                              method="copy", preview=png)
    image = read_volume(phantom_folder / "image.nii.gz")
    want = viz.preview_figure(result.array, image=image.array, spacing=image.spacing,
                              annotated=k, title=f"image.nii.gz: propagated from slice k={k}")
    assert (read_png(png) == want.rgb).all()


def test_preview_follows_the_direction_matrix(phantom_folder, annotation, tmp_path) -> None:
    ann, k = annotation
    image = read_volume(phantom_folder / "image.nii.gz")
    flipped = Volume(image.array, image.spacing, image.origin, np.diag([-1.0, -1.0, 1.0]))
    png = tmp_path / "flipped.png"
    result = oneseg.propagate(image=flipped, annotation=read_label(ann).array, method="copy",
                              preview=png)
    kwargs = {"image": image.array, "spacing": image.spacing, "annotated": k,
              "title": f"volume: propagated from slice k={k}"}
    want = viz.preview_figure(result.array, direction=flipped.direction, **kwargs)
    unflipped = viz.preview_figure(result.array, **kwargs)
    picture = read_png(png)
    assert (picture == want.rgb).all() and (picture != unflipped.rgb).any()


def test_bad_preview_path_fails_before_propagating(phantom_folder, annotation, tmp_path,
                                                   capsys) -> None:
    ann, _ = annotation
    out = tmp_path / "out.nii.gz"
    for bad, problem in ((tmp_path / "missing" / "p.png", "does not exist"),
                         (tmp_path / "p.jpg", ".png")):
        code = main(["-q", "oneseg", "propagate", "--method", "copy", "-i",
                     str(phantom_folder / "image.nii.gz"), "-a", str(ann), "-o", str(out),
                     "--preview", str(bad)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1
        assert err[0].startswith("sparseseg: error: ") and problem in err[0]
        assert not out.exists()  # nothing was propagated or written
    with pytest.raises(InputError):
        oneseg.propagate(image=phantom_folder / "image.nii.gz", annotation=ann, method="copy",
                         preview=tmp_path / "p.gif")
