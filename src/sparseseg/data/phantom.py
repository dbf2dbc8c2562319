"""A generator of small, realistic, labeled abdomen-like CT volumes.

The body is an elliptic cylinder of fat around muscle and soft tissue with a spine; four organs
with different intensity and texture sit inside: liver, spleen, both kidneys (one label) and a
pancreas. Each organ is a deformed ellipsoid whose cross-section and centre change smoothly along
the slice axis, so neighbouring slices correspond as in a real scan. Intensities are in
Hounsfield-like units with Gaussian noise; voxel spacing is anisotropic. Everything is drawn from
one seed, so a phantom is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

from sparseseg.io.volume import Volume

PHANTOM_LABELS: dict[str, int] = {"liver": 1, "spleen": 2, "kidney": 3, "pancreas": 4}
"""Label value of each phantom organ."""

# name, label, centre (x, y in [-1, 1], z in [0, 1]), radii (x, y, z), mean HU, texture scale
_ORGANS = (
    ("liver", 1, (-0.35, -0.05, 0.55), (0.38, 0.42, 0.45), 70.0, 4.0),
    ("spleen", 2, (0.48, 0.25, 0.60), (0.16, 0.2, 0.28), 125.0, 2.0),
    ("kidney", 3, (-0.32, 0.45, 0.38), (0.12, 0.15, 0.22), 190.0, 1.0),
    ("kidney", 3, (0.34, 0.47, 0.36), (0.12, 0.15, 0.22), 190.0, 1.0),
    ("pancreas", 4, (0.08, 0.18, 0.48), (0.34, 0.08, 0.12), 25.0, 1.5),
)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-8)


def make_phantom(
    *,
    shape: tuple[int, int, int] = (96, 96, 48),
    spacing: tuple[float, float, float] = (2.0, 2.0, 4.0),
    seed: int = 0,
    noise: float = 12.0,
    organ_hu: Mapping[str, float] | None = None,
) -> tuple[Volume, Volume]:
    """Generate one abdomen-like CT phantom and its label map.

    Args:
        shape: Voxel grid ``(i, j, k)``; ``k`` is the slice axis.
        spacing: Voxel size in mm (anisotropic by default, like a clinical CT).
        seed: Random seed; the same seed gives the same phantom.
        noise: Standard deviation of the Gaussian noise in HU.
        organ_hu: Mean HU of some organs by name (e.g. ``{"liver": 125}``), replacing the
            defaults (liver 70, spleen 125, kidney 190, pancreas 25). Datasets from different
            scanners or contrast phases differ like this; the LTUDA phantom benchmark gives
            each partially labeled dataset its own contrast.

    Returns:
        ``(image, label)``: image in HU (float32), labels per :data:`PHANTOM_LABELS` (uint8),
        both with the same geometry (identity direction, origin at 0).

    Example:
        >>> image, label = make_phantom(shape=(48, 48, 24), seed=1)
        >>> sorted(set(label.array.ravel().tolist()))
        [0, 1, 2, 3, 4]
    """
    organ_hu = dict(organ_hu or {})
    unknown = set(organ_hu) - set(PHANTOM_LABELS)
    if unknown:
        raise ValueError(f"organ_hu names unknown organs {sorted(unknown)}; "
                         f"phantom organs are {list(PHANTOM_LABELS)}")
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = np.linspace(-1, 1, nx)[:, None, None]
    y = np.linspace(-1, 1, ny)[None, :, None]
    z = np.linspace(0, 1, nz)[None, None, :]

    # Body: elliptic cylinder whose size breathes slowly along z.
    body_a = 0.92 + 0.04 * np.sin(2 * np.pi * (z + rng.uniform()))
    body_b = 0.72 + 0.04 * np.cos(2 * np.pi * (z + rng.uniform()))
    body_r = (x / body_a) ** 2 + (y / body_b) ** 2
    image = np.full(shape, -1000.0)
    image = np.where(body_r <= 1.0, -100.0, image)  # subcutaneous fat
    image = np.where(body_r <= 0.82, 35.0, image)  # muscle wall and soft tissue
    image = np.where(body_r <= 0.7, 10.0, image)  # abdominal cavity
    spine = (x / 0.1) ** 2 + ((y - 0.58) / 0.1) ** 2 <= 1.0
    image = np.where(np.broadcast_to(spine, shape), 400.0, image)
    # Bowel-like texture in the cavity.
    cavity = body_r <= 0.7
    image = image + cavity * 25.0 * _smooth_noise(rng, shape, 2.0)

    label = np.zeros(shape, np.uint8)
    for name, value, centre, radii, hu, texture in _ORGANS:
        hu = organ_hu.get(name, hu)
        jitter = rng.uniform(-0.04, 0.04, 3)
        cx, cy, cz = (c + j for c, j in zip(centre, jitter, strict=True))
        scale = rng.uniform(0.9, 1.1, 3)
        rx, ry, rz = (r * s for r, s in zip(radii, scale, strict=True))
        # Centre drifts and cross-section deforms smoothly along z.
        phase = rng.uniform(0, 2 * np.pi, 2)
        dx = 0.05 * np.sin(2 * np.pi * z + phase[0])
        dy = 0.04 * np.sin(2 * np.pi * z + phase[1])
        dist = ((x - cx - dx) / rx) ** 2 + ((y - cy - dy) / ry) ** 2 + ((z - cz) / rz) ** 2
        lumps = 0.25 * _smooth_noise(rng, shape, 6.0)
        mask = (dist + lumps) <= 1.0
        mask &= cavity
        tex = _smooth_noise(rng, shape, texture)
        image = np.where(mask, hu + 12.0 * tex, image)
        label[mask] = value

    image = image + noise * rng.standard_normal(shape)
    geometry = {"spacing": tuple(float(s) for s in spacing), "origin": (0.0, 0.0, 0.0)}
    direction = np.eye(3)
    return (
        Volume(image.astype(np.float32), direction=direction, **geometry),
        Volume(label, direction=direction.copy(), **geometry),
    )


def make_phantom_dataset(
    folder: str | Path,
    *,
    n_cases: int = 4,
    shape: tuple[int, int, int] = (96, 96, 48),
    spacing: tuple[float, float, float] = (2.0, 2.0, 4.0),
    seed: int = 0,
    organ_hu: Mapping[str, float] | None = None,
) -> Path:
    """Write phantoms as a dataset folder in the nnU-Net/MSD layout.

    Args:
        folder: Output dataset folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        n_cases: Number of phantoms; case ``c`` uses seed ``seed + c``.
        shape: Voxel grid of each phantom.
        spacing: Voxel size in mm.
        seed: Seed of the first case.
        organ_hu: Mean HU of some organs by name, as in :func:`make_phantom`.

    Returns:
        The dataset folder.
    """
    import json

    from sparseseg.io.writer import atomic_path, write_volume

    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for c in range(n_cases):
        image, label = make_phantom(shape=shape, spacing=spacing, seed=seed + c,
                                    organ_hu=organ_hu)
        name = f"phantom_{c:03d}"
        write_volume(folder / "imagesTr" / f"{name}_0000.nii.gz", image.array, image)
        write_volume(folder / "labelsTr" / f"{name}.nii.gz", label.array, label)
    meta = {
        "name": "sparseseg phantom",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **PHANTOM_LABELS},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    with atomic_path(folder / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return folder
