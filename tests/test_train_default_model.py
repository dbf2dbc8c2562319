"""The script that trains the shipped default model: cache round trip, options, a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmarks import train_default_model as tdm

from sparseseg.data.phantom import make_phantom
from sparseseg.io import write_volume
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.preprocess import volume_to_slices


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    """Two tiny datasets in the nnU-Net layout (images only)."""
    for name, seeds in (("SetA", (1, 2)), ("SetB", (3,))):
        images = tmp_path / "data" / name / "imagesTr"
        images.mkdir(parents=True)
        for seed in seeds:
            image, _ = make_phantom(shape=(32, 32, 8), seed=seed)
            write_volume(images / f"c{seed}_0000.nii.gz", image.array, image)
    return tmp_path / "data"


def test_prepare_and_cache_round_trip(data_root: Path, tmp_path: Path) -> None:
    stacks, records = tdm.prepare(data_root, size=16)
    assert [r["dataset"] for r in records] == ["SetA", "SetA", "SetB"]
    assert all(s.dtype == np.uint8 and s.shape == (8, 16, 16) for s in stacks)
    # The network's own preparation (normalised to [0, 1], resized), stored as 8-bit.
    image, _ = make_phantom(shape=(32, 32, 8), seed=1)
    expected = volume_to_slices(image.array, size=16)[:, 0].numpy()
    assert np.abs(stacks[0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    cache = tmp_path / "slices.npz"
    tdm.save_cache(cache, stacks, records, 16)
    again, records_again, size = tdm.load_cache(cache)
    assert size == 16 and records_again == records
    assert all(np.array_equal(a, b) for a, b in zip(stacks, again, strict=True))
    assert tdm.summary(records) == {"SetA": {"volumes": 2, "slices": 16},
                                    "SetB": {"volumes": 1, "slices": 8}}


def test_parse_repeat() -> None:
    assert tdm.parse_repeat(["SetB=5"], {"SetA", "SetB"}) == {"SetB": 5}
    for bad in ("SetC=2", "SetB=0", "SetB"):
        with pytest.raises(SystemExit, match="--repeat"):
            tdm.parse_repeat([bad], {"SetA", "SetB"})


def test_tiny_training_run_writes_a_loadable_model(data_root: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache.npz", tmp_path / "model"
    args = ["--data", str(data_root), "--cache", str(cache), "--output", str(out),
            "--device", "cpu", "--size", "32", "--width", "16", "--epochs", "1",
            "--pairs-per-epoch", "16", "--repeat", "SetB=3", "--threads", "1"]
    tdm.main(args)
    assert cache.is_file()
    model = OneSegModel.load(out)
    record = json.loads((out / "config.json").read_text())
    assert record["n_volumes"] == 2 + 3  # SetB drawn three times as often
    assert record["default_model"]["repeat"] == {"SetB": 3}
    assert record["default_model"]["steps"] == 2
    assert model.size == 32
    # A second run reads the cache (the data folder is no longer needed).
    tdm.main([a if a != str(data_root) else str(tmp_path / "absent") for a in args])
