"""Fixtures for the OneSeg tests: a tiny trained model and phantom volumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparseseg.data.phantom import make_phantom
from sparseseg.io.writer import write_volume
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.training import TrainConfig

SHAPE = (48, 40, 20)
SPACING = (2.0, 2.0, 4.0)
TINY_NET = NetworkConfig(width=16, embedding=16, radius=4)


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three unlabeled phantoms plus a labeled test phantom on disk."""
    folder = tmp_path_factory.mktemp("oneseg_phantoms")
    (folder / "train").mkdir()
    for seed in range(3):
        image, _ = make_phantom(shape=SHAPE, spacing=SPACING, seed=10 + seed)
        write_volume(folder / "train" / f"p{seed}.nii.gz", image.array, image)
    image, label = make_phantom(shape=SHAPE, spacing=SPACING, seed=1)
    write_volume(folder / "image.nii.gz", image.array, image)
    write_volume(folder / "label.nii.gz", label.array, label)
    return folder


@pytest.fixture(scope="session")
def tiny_model(phantom_folder: Path) -> Path:
    """A OneSeg model trained for a few steps on the phantoms (seconds on a CPU)."""
    from sparseseg import oneseg

    torch.manual_seed(0)
    config = TrainConfig(epochs=2, pairs_per_epoch=120, batch_size=4, size=48, clusters=4)
    return oneseg.train(
        images=[phantom_folder / "train"],
        output=phantom_folder / "model",
        network=TINY_NET,
        training=config,
        device="cpu",
        progress=False,
    )
