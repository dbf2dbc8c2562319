"""Organ-aware selection: with a rough mark, the start slice is chosen among the organ's slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparseseg import oneseg
from sparseseg.cli.main import main
from sparseseg.io import Volume, read_volume, write_volume
from sparseseg.oneseg.screening import label_box, region_descriptors


def test_label_box_fractions_with_margin() -> None:
    mask = np.zeros((3, 40, 20), bool)
    mask[1, 10:20, 4:8] = True
    r0, r1, c0, c1 = label_box(mask, margin=0.5)
    assert (r0, r1) == pytest.approx((5 / 40, 25 / 40))
    assert (c0, c1) == pytest.approx((2 / 20, 10 / 20))
    assert label_box(np.zeros((2, 5, 5), bool)) == (0.0, 1.0, 0.0, 1.0)


def test_region_descriptors_crop_the_box() -> None:
    feats = np.arange(2 * 3 * 8 * 8, dtype=float).reshape(2, 3, 8, 8)
    desc = region_descriptors(feats, (0.25, 0.5, 0.5, 1.0))
    assert desc.shape == (2, 3 * 2 * 4)
    assert np.array_equal(desc[0], feats[0, :, 2:4, 4:8].ravel())
    # A box thinner than a feature pixel still keeps one.
    assert region_descriptors(feats, (0.5, 0.5, 0.5, 0.5)).shape == (2, 3)


@pytest.fixture()
def two_organ_volume(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A long volume: a bright slab (a distractor filling most slices) and a small blob that
    holds only slices 4-9."""
    rng = np.random.default_rng(0)
    shape = (48, 48, 40)
    image = rng.normal(0, 5, shape).astype(np.float32)
    image[6:42, 6:42, 12:] += 200.0  # large structure over slices 12-39
    ii, jj, kk = np.indices(shape)
    blob = ((ii - 30) ** 2 + (jj - 18) ** 2 <= 36) & (kk >= 4) & (kk <= 9)
    image[blob] += 120.0
    vol = Volume(image, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    path = write_volume(tmp_path / "image.nii.gz", image, vol)
    return path, blob


def test_select_with_a_mark_stays_inside_the_organ(tiny_model: Path, two_organ_volume,
                                                   tmp_path: Path, capsys) -> None:
    image, blob = two_organ_volume
    blind = oneseg.select(model=tiny_model, image=image, device="cpu")
    assert not blob[:, :, blind].any()  # organ-blind: the large structure wins
    mark = np.zeros(blob.shape, np.uint8)
    mark[:, :, 5] = blob[:, :, 5]
    aware = oneseg.select(model=tiny_model, image=image, annotation=mark, device="cpu")
    assert 4 <= aware <= 9
    middle = oneseg.select(model=tiny_model, image=image, annotation=mark, criterion="middle",
                           device="cpu")
    assert 4 <= middle <= 9
    ref = read_volume(image)
    mark_path = write_volume(tmp_path / "mark.nii.gz", mark, ref)
    assert main(["oneseg", "select", "-m", str(tiny_model), "-i", str(image), "-a",
                 str(mark_path), "-q"]) == 0
    assert int(capsys.readouterr().out.strip()) == aware
