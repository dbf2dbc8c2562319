"""Fixtures for the napari plugin tests: phantom files, a tiny model, a headless Qt.

The tests drive the real widget in a real viewer (``make_napari_viewer``, pytest-qt) with Qt's
``offscreen`` platform. Without a display (no ``DISPLAY``, as on CI) Qt's offscreen platform
gives no OpenGL context, and napari asks OpenGL for its texture limits when a layer is added;
there the answers are given here instead (nothing is drawn: the viewer is never shown). With a
display (a desktop, ``xvfb-run``) napari asks OpenGL as usual.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseseg.data.phantom import make_phantom
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.napari.autosave import AUTOSAVE_ENV

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHAPE = (40, 36, 16)
SPACING = (1.5, 1.25, 3.0)
ORIGIN = (12.0, -30.5, 7.25)
DIRECTION = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@pytest.fixture(autouse=True)
def _headless_gl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer napari's OpenGL capability queries when there is no display to get GL from."""
    if _has_display() or importlib.util.find_spec("napari") is None:
        return
    for name in ("canvas", "layers.base", "layers.image", "layers.labels", "utils.gl"):
        importlib.import_module(f"napari._vispy.{name}")
    for name, module in list(sys.modules.items()):
        if not name.startswith("napari._vispy"):
            continue
        if hasattr(module, "get_gl_extensions"):
            monkeypatch.setattr(module, "get_gl_extensions", lambda: "")
        if hasattr(module, "get_max_texture_sizes"):
            monkeypatch.setattr(module, "get_max_texture_sizes", lambda: (4096, 2048))


@pytest.fixture(autouse=True)
def autosave_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private autosave folder for each test."""
    folder = tmp_path / "autosave"
    monkeypatch.setenv(AUTOSAVE_ENV, str(folder))
    return folder


@pytest.fixture(scope="session")
def phantom() -> tuple[Volume, Volume]:
    """A phantom ``(image, label)`` with anisotropic spacing, an origin and a flipped axis."""
    image, label = make_phantom(shape=SHAPE, spacing=SPACING, seed=5)
    image = Volume(image.array, SPACING, ORIGIN, DIRECTION.copy())
    label = Volume(label.array, SPACING, ORIGIN, DIRECTION.copy())
    return image, label


@pytest.fixture
def phantom_files(tmp_path: Path, phantom: tuple[Volume, Volume]) -> tuple[Path, Path]:
    """The phantom written as ``case_0000.nii.gz`` and ``case.nii.gz``."""
    image, label = phantom
    return (
        write_volume(tmp_path / "case_0000.nii.gz", image.array, image),
        write_volume(tmp_path / "case.nii.gz", label.array, label),
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A OneSeg model trained for a few steps on two phantoms (seconds on a CPU)."""
    from sparseseg import oneseg
    from sparseseg.oneseg.network import NetworkConfig
    from sparseseg.oneseg.training import TrainConfig

    folder = tmp_path_factory.mktemp("napari_model")
    for seed in range(2):
        image, _ = make_phantom(shape=SHAPE, spacing=SPACING, seed=20 + seed)
        write_volume(folder / f"p{seed}.nii.gz", image.array, image)
    torch.manual_seed(0)
    return oneseg.train(
        images=[folder],
        output=folder / "model",
        network=NetworkConfig(width=16, embedding=16, radius=4),
        training=TrainConfig(epochs=1, pairs_per_epoch=8, batch_size=4, size=32, clusters=2,
                             local_chains=1),
        device="cpu",
        progress=False,
    )
