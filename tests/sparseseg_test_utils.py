"""Helpers shared by the foundation tests (importable: ``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparseseg.io import Volume

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO_ROOT / "../shared/data").resolve()
"""Real volumes (nnU-Net layout), read in place; tests using them skip when absent."""

def real_case(folder: str, pattern: str = "*") -> tuple[Path, Path]:
    """First ``(image, label)`` pair of a real dataset folder whose case matches ``pattern``."""
    root = REAL_DATA / folder
    labels = sorted((root / "labelsTr").glob(f"{pattern}.nii.gz"))
    if not labels:
        pytest.skip(f"no label matching {pattern!r} in {root}")
    label = labels[0]
    image = root / "imagesTr" / label.name.replace(".nii.gz", "_0000.nii.gz")
    return image, label


def liver_slice_annotation(folder: Path) -> tuple[Volume, np.ndarray, int, np.ndarray]:
    """The OneSeg test phantom in ``folder`` (``image.nii.gz``, ``label.nii.gz``), its label,
    the liver's (label 1) largest slice and that slice's annotation volume."""
    from sparseseg.io import read_label, read_volume

    image = read_volume(folder / "image.nii.gz")
    truth = read_label(folder / "label.nii.gz").array
    k = int(np.argmax((truth == 1).sum(axis=(0, 1))))
    ann = np.zeros_like(truth)
    ann[:, :, k] = truth[:, :, k]
    return image, truth, k, ann


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    """A filled 2D disc: the pixels within ``radius`` of ``centre``."""
    ii, jj = np.indices(shape)
    return (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= radius**2


def random_blob(
    shape: tuple[int, int, int], rng: np.random.Generator, *, n_balls: int = 4
) -> np.ndarray:
    """A union of random balls: an irregular, possibly multi-component mask."""
    grid = np.indices(shape).astype(float)
    mask = np.zeros(shape, bool)
    for _ in range(n_balls):
        centre = rng.uniform(0.2, 0.8, 3) * np.array(shape)
        radius = rng.uniform(0.1, 0.3) * min(shape)
        dist = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        mask |= dist <= radius**2
    return mask
