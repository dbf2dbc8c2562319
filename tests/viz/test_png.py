"""PNG files: path checks before any work, atomic writes that decode to the picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparseseg import viz
from sparseseg.errors import InputError


def small_figure() -> viz.Figure:
    truth = np.zeros((12, 10, 4), np.uint8)
    truth[3:8, 2:7, 1:3] = 1
    return viz.comparison_figure(np.roll(truth, 1, axis=0), truth, panel_px=48)


def test_write_png_writes_the_picture(tmp_path: Path) -> None:
    fig = small_figure()
    out = viz.write_png(tmp_path / "fig.png", fig)
    assert out == tmp_path / "fig.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.size == (fig.rgb.shape[1], fig.rgb.shape[0])
        pixels = np.asarray(img)
    assert (pixels == fig.rgb).all()
    ref = fig.find("reference")
    assert (ref.crop(pixels) == viz.label_colour(1)).all(-1).any()  # the label's outline
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    viz.write_png(tmp_path / "UPPER.PNG", rgb.astype(np.int64))  # any integer dtype
    with Image.open(tmp_path / "UPPER.PNG") as img:
        assert img.size == (5, 3) and np.asarray(img).tolist() == rgb.tolist()


def test_write_png_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = viz.write_png(tmp_path / "fig.png", small_figure())
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
        viz.check_png_path(tmp_path / name)
    with pytest.raises(InputError, match=problem):
        viz.write_png(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.png"]  # nothing written


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (4, 4, 1)])
def test_write_png_needs_rgb(tmp_path: Path, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        viz.write_png(tmp_path / "ok.png", np.zeros(shape, np.uint8))
    assert not (tmp_path / "ok.png").exists()


def test_check_png_path_accepts_a_bare_name(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert viz.check_png_path("fig.png") == Path("fig.png")
    assert viz.check_png_path(str(tmp_path / "x.PNG")) == tmp_path / "x.PNG"
