"""Shared fixtures: tiny phantoms on disk and the real volumes in ``../shared/data``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sparseseg.data.phantom import make_phantom
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg_test_utils import REAL_DATA

TINY_SHAPE = (32, 28, 12)
TINY_SPACING = (1.5, 1.25, 3.0)


@pytest.fixture(scope="session")
def tiny_phantom() -> tuple[Volume, Volume]:
    """A small phantom ``(image, label)`` with anisotropic spacing."""
    return make_phantom(shape=TINY_SHAPE, spacing=TINY_SPACING, seed=3)


@pytest.fixture
def tiny_files(tmp_path: Path, tiny_phantom: tuple[Volume, Volume]) -> tuple[Path, Path]:
    """The tiny phantom written as ``image.nii.gz`` and ``label.nii.gz`` in ``tmp_path``."""
    image, label = tiny_phantom
    img = write_volume(tmp_path / "image.nii.gz", image.array, image)
    lab = write_volume(tmp_path / "label.nii.gz", label.array, label)
    return img, lab


@pytest.fixture
def real_data() -> Path:
    """The shared real-data folder, or skip the test when it is not there."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent (expected ../shared/data)")
    return REAL_DATA


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's tests (identical numerics, less contention); use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
