"""The LTUDA model and its folder: ``config.json`` keys, weights, refusals."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from sparseseg.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_model
from sparseseg.errors import ModelError
from sparseseg.ltuda.model import LTUDAModel

ORGANS = ["liver", "spleen"]


def _model(seed: int = 0) -> LTUDAModel:
    torch.manual_seed(seed)
    return LTUDAModel(n_organs=2, base_channels=4, depth=2, n_prototypes=3)


def test_save_then_load_gives_the_same_model(tmp_path: Path) -> None:
    model = _model()
    model.proto_unlabeled.prototypes.mul_(-1)  # a buffer, not only parameters
    folder = model.save(tmp_path / "m", organs=ORGANS, size=32, classifier="labeled",
                        components={"spleen": 2}, info={"method": "ltuda", "best_epoch": 7})
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert {k: config[k] for k in ("kind", "organs", "size", "base_channels", "depth",
                                   "embed_dim", "n_prototypes", "temperature", "classifier",
                                   "components", "method", "best_epoch")} == {
        "kind": "ltuda", "organs": ORGANS, "size": 32, "base_channels": 4, "depth": 2,
        "embed_dim": 64, "n_prototypes": 3, "temperature": 0.1, "classifier": "labeled",
        "components": {"liver": 1, "spleen": 2}, "method": "ltuda", "best_epoch": 7}
    loaded = LTUDAModel.load(folder)
    assert loaded.config == config and not loaded.training
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    for classifier in ("linear", "labeled", "unlabeled"):
        assert torch.equal(model.class_scores(x, classifier), loaded.class_scores(x, classifier))


def test_save_writes_the_weights_it_is_given(tmp_path: Path) -> None:
    model, other = _model(0), _model(1)
    folder = model.save(tmp_path / "m", organs=ORGANS, size=32, state=other.state_dict())
    loaded = LTUDAModel.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    assert loaded.config["classifier"] == "unlabeled"  # the default
    assert loaded.config["components"] == {"liver": 1, "spleen": 1}
    with pytest.raises(ValueError, match="3 organ names for 2 organ channels"):
        model.save(tmp_path / "m", organs=[*ORGANS, "kidney"], size=32)
    with pytest.raises(ValueError, match="unknown classifier 'teacher'"):
        model.save(tmp_path / "m", organs=ORGANS, size=32, classifier="teacher")


def test_folder_written_before_save_existed_loads(tmp_path: Path) -> None:
    """The layout the training API wrote with literal keys (no prototype keys at all in the
    oldest folders: their defaults apply)."""
    model = LTUDAModel(n_organs=2, base_channels=4, depth=2)
    config = {"method": "cda", "organs": ORGANS, "size": 32, "base_channels": 4, "depth": 2,
              "components": {"liver": 1, "spleen": 1}, "classifier": "linear",
              "weights": "teacher", "best_epoch": 3}
    save_model(tmp_path / "m", kind="ltuda", config=config, state=model.state_dict())
    loaded = LTUDAModel.load(tmp_path / "m")
    assert (loaded.embed_dim, loaded.n_prototypes, loaded.temperature) == (64, 5, 0.1)
    assert loaded.config["best_epoch"] == 3 and loaded.config["weights"] == "teacher"


def test_bad_folders_are_refused_naming_the_folder_and_the_problem(tmp_path: Path) -> None:
    folder = _model().save(tmp_path / "m", organs=ORGANS, size=32)
    config = json.loads((folder / CONFIG_NAME).read_text())

    (folder / CONFIG_NAME).write_text(json.dumps({**config, "organs": ["liver"]}))
    with pytest.raises(ModelError) as exc:
        LTUDAModel.load(folder)
    assert str(exc.value).startswith(f"{folder}: weights do not match config.json (")

    (folder / CONFIG_NAME).write_text(json.dumps({**config, "depth": "deep"}))
    with pytest.raises(ModelError) as exc:
        LTUDAModel.load(folder)
    assert str(exc.value).startswith(f"{folder}: config.json lacks or garbles a setting (")

    (folder / CONFIG_NAME).write_text(json.dumps({**config, "kind": "oneseg"}))
    with pytest.raises(ModelError, match="is a 'oneseg' model, expected 'ltuda'"):
        LTUDAModel.load(folder)

    (folder / CONFIG_NAME).write_text(json.dumps(config))
    marker = tmp_path / "pwned"
    (folder / WEIGHTS_NAME).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelError) as exc:
        LTUDAModel.load(folder)
    assert str(exc.value).startswith(f"{folder / WEIGHTS_NAME}: corrupt weights")
    assert not marker.exists()  # never unpickled


class _Payload:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
