"""``sparseseg view``: its parser, the message without napari, and a core free of Qt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sparseseg.cli import view
from sparseseg.cli.main import main


def test_view_without_napari_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, phantom_files
) -> None:
    image_file, _ = phantom_files
    real = view.importlib.util.find_spec
    monkeypatch.setattr(view.importlib.util, "find_spec",
                        lambda name, *a: None if name == "napari" else real(name, *a))
    assert main(["view", str(image_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['sparseseg: error: napari is not installed; install it with: '
                   'pip install "sparseseg[napari]"']


def test_view_refuses_a_missing_image(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    pytest.importorskip("napari")
    assert main(["view", str(tmp_path / "nothing.nii.gz")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("weight", ["1.5", "-0.2", "nan"])
def test_view_refuses_a_hybrid_weight_outside_0_1(
    weight: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, phantom_files
) -> None:
    image_file, _ = phantom_files
    opened = []
    monkeypatch.setattr("sparseseg.napari.session.open_viewer",
                        lambda *a, **k: opened.append(k))
    assert main(["view", str(image_file), "--hybrid-weight", weight]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sparseseg: error: --hybrid-weight needs a number between 0 and 1, got "
                   f"{float(weight)}"]
    assert not opened  # refused before any window opens


def test_view_passes_its_options_to_the_viewer(
    monkeypatch: pytest.MonkeyPatch, phantom_files, tmp_path: Path
) -> None:
    napari = pytest.importorskip("napari")
    image_file, label_file = phantom_files
    opened = []
    monkeypatch.setattr("sparseseg.napari.session.open_viewer",
                        lambda image, **k: opened.append((image, k)))
    monkeypatch.setattr(napari, "run", lambda: None)
    out = tmp_path / "o.nii.gz"
    assert main(["view", str(image_file), "--labels", str(label_file), "--method", "hybrid",
                 "--hybrid-weight", "0.4", "-o", str(out), "--device", "cpu",
                 "--refiner", str(tmp_path)]) == 0
    assert opened == [(str(image_file), dict(labels=str(label_file), model=None,
                                             method="hybrid", output=str(out), device="cpu",
                                             hybrid_weight=0.4, refiner=str(tmp_path)))]


def test_view_help_lists_the_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["view", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--labels", "--model", "--method", "--hybrid-weight", "--output", "--device"):
        assert option in out


def test_core_imports_neither_qt_nor_napari() -> None:
    code = (
        "import sys, sparseseg, sparseseg.oneseg, sparseseg.cli.main, sparseseg.napari.tasks\n"
        "sparseseg.cli.main.build_parser()\n"
        "gui = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'superqt', 'vispy'})\n"
        "print(gui)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
