"""The phantom: reproducible, realistic enough to stand in for a scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparseseg.data.phantom import PHANTOM_LABELS, make_phantom, make_phantom_dataset
from sparseseg.io.dataset import find_cases
from sparseseg.io.reader import read_label, read_volume
from sparseseg.metrics import dice

SHAPE = (48, 48, 24)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=SHAPE, seed=1)


def test_reproducible_by_seed(phantom) -> None:
    image, label = make_phantom(shape=SHAPE, seed=1)
    np.testing.assert_array_equal(image.array, phantom[0].array)
    np.testing.assert_array_equal(label.array, phantom[1].array)


def test_different_seeds_differ(phantom) -> None:
    image, label = make_phantom(shape=SHAPE, seed=2)
    assert not np.array_equal(label.array, phantom[1].array)
    assert np.abs(image.array - phantom[0].array).mean() > 1.0


def test_all_labels_present_and_types(phantom) -> None:
    image, label = phantom
    assert image.shape == label.shape == SHAPE
    assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
    assert set(np.unique(label.array)) == {0, *PHANTOM_LABELS.values()}
    assert PHANTOM_LABELS == {"liver": 1, "spleen": 2, "kidney": 3, "pancreas": 4}


def test_anisotropic_spacing_and_geometry(phantom) -> None:
    image, label = phantom
    assert image.spacing == (2.0, 2.0, 4.0)
    assert image.same_geometry(label)
    custom, _ = make_phantom(shape=(16, 16, 8), spacing=(0.8, 0.8, 5.0))
    assert custom.spacing == (0.8, 0.8, 5.0)


def test_cross_sections_change_smoothly() -> None:
    _, label = make_phantom(seed=4)  # default size: small organs need enough pixels per slice
    for value in PHANTOM_LABELS.values():
        mask = label.array == value
        areas = mask.sum(axis=(0, 1))
        # Slices through the organ's body; at its tips the cross-section shrinks to nothing.
        ks = [k for k in range(label.shape[2]) if areas[k] >= 0.3 * areas.max()]
        assert len(ks) >= 3, f"label {value} spans too few slices"
        scores = [dice(mask[:, :, k], mask[:, :, k + 1]) for k in ks[:-1] if k + 1 in ks]
        assert np.mean(scores) > 0.85, f"label {value}: {scores}"
        assert min(scores) > 0.6, f"label {value}: {scores}"
        # ...but they do change: not a prism.
        assert min(scores) < 0.999


def test_organs_have_different_intensities(phantom) -> None:
    image, label = phantom
    means = {v: float(image.array[label.array == v].mean()) for v in PHANTOM_LABELS.values()}
    background = float(image.array[(label.array == 0) & (image.array > -500)].mean())
    values = sorted(means.values()) + [background]
    gaps = np.diff(sorted(values))
    assert gaps.min() > 15.0, means
    assert image.array.min() < -900  # air outside the body


def test_dataset_on_disk(tmp_path: Path) -> None:
    root = make_phantom_dataset(tmp_path / "ds", n_cases=2, shape=(24, 24, 12), seed=5)
    cases = find_cases(root, with_labels=True)
    assert [c.name for c in cases] == ["phantom_000", "phantom_001"]
    image, label = read_volume(cases[1].image), read_label(cases[1].label)
    ref_image, ref_label = make_phantom(shape=(24, 24, 12), seed=6)
    np.testing.assert_allclose(image.array, ref_image.array)
    np.testing.assert_array_equal(label.array, ref_label.array)
    assert image.same_geometry(ref_image)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"]["liver"] == 1 and meta["numTraining"] == 2


def test_organ_hu_override_changes_only_that_organ(phantom) -> None:
    image, label = make_phantom(shape=SHAPE, seed=1, organ_hu={"liver": 200.0})
    np.testing.assert_array_equal(label.array, phantom[1].array)
    liver = label.array == PHANTOM_LABELS["liver"]
    spleen = label.array == PHANTOM_LABELS["spleen"]
    assert image.array[liver].mean() - phantom[0].array[liver].mean() > 100.0
    np.testing.assert_allclose(image.array[spleen].mean(), phantom[0].array[spleen].mean())


def test_organ_hu_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="unknown organs"):
        make_phantom(shape=SHAPE, organ_hu={"heart": 50.0})
