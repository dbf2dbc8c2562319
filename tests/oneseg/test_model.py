"""Model folders: round trip, and refusal of missing, foreign, corrupt or pickled folders."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from sparseseg.errors import ModelError
from sparseseg.oneseg.model import OneSegModel


def test_round_trip_gives_the_same_features(tiny_model: Path) -> None:
    a = OneSegModel.load(tiny_model)
    b = OneSegModel.load(tiny_model)
    x = torch.rand(2, 1, a.size, a.size)
    assert torch.equal(a.features(x), b.features(x))
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["kind"] == "oneseg" and config["training"]["epochs"] == 2
    assert config["environment"]["torch"] == torch.__version__


def test_refuses_broken_folders(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OneSegModel.load(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    config = json.loads((bad / "config.json").read_text())
    config["network"]["width"] = 8  # weights no longer fit the network
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not match"):
        OneSegModel.load(bad)
    config["kind"] = "ltuda"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="expected 'oneseg'"):
        OneSegModel.load(bad)


def test_refuses_a_pickle_without_running_it(tiny_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "pickled"
    shutil.copytree(tiny_model, bad)
    (bad / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="corrupt weights"):
        OneSegModel.load(bad)
    assert not marker.exists()
