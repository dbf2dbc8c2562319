"""Model folders: safetensors + JSON, and refusal of anything else."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from sparseseg import __version__
from sparseseg.checkpoint import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    load_model,
    save_model,
)
from sparseseg.errors import ModelError


def state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 2, 3, 3, generator=gen),
        "conv.bias": torch.zeros(4),
        "steps": torch.tensor([7], dtype=torch.int64),
    }


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_model(tmp_path / "model", kind="oneseg", config={"size": 64}, state=state())


def test_round_trip(model_dir: Path) -> None:
    config, loaded = load_model(model_dir, kind="oneseg")
    assert config["size"] == 64 and config["kind"] == "oneseg"
    assert config["format_version"] == FORMAT_VERSION
    assert config["environment"]["sparseseg"] == __version__
    assert config["environment"]["torch"] == torch.__version__
    want = state()
    assert set(loaded) == set(want)
    for key in want:
        assert torch.equal(loaded[key], want[key]) and loaded[key].dtype == want[key].dtype
    assert sorted(p.name for p in model_dir.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_non_contiguous_and_grad_tensors(tmp_path: Path) -> None:
    weight = torch.randn(3, 5, requires_grad=True)
    save_model(tmp_path / "m", kind="ltuda", config={}, state={"w": weight, "t": weight.T})
    _, loaded = load_model(tmp_path / "m", kind="ltuda")
    assert torch.equal(loaded["t"], weight.detach().T)


class _Payload:
    """Unpickling this object would create a marker file (what a malicious pickle can do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_renamed_as_safetensors_is_refused(model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weights": _Payload(marker)})
    # Sanity check that the payload really would run if unpickled elsewhere.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    (model_dir / WEIGHTS_NAME).write_bytes(payload)
    with pytest.raises(ModelError, match="corrupt weights") as exc:
        load_model(model_dir, kind="oneseg")
    assert WEIGHTS_NAME in str(exc.value)
    assert not marker.exists()


def test_torch_save_file_is_refused(model_dir: Path) -> None:
    torch.save(state(), model_dir / WEIGHTS_NAME)
    with pytest.raises(ModelError, match="corrupt weights"):
        load_model(model_dir, kind="oneseg")


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_truncated_safetensors(model_dir: Path, keep: float) -> None:
    file = model_dir / WEIGHTS_NAME
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError) as exc:
        load_model(model_dir, kind="oneseg")
    assert str(file) in str(exc.value)


def test_other_kind(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="is a 'oneseg' model, expected 'ltuda'") as exc:
        load_model(model_dir, kind="ltuda")
    assert str(model_dir) in str(exc.value)


def _edit_config(model_dir: Path, **changes: object) -> None:
    file = model_dir / CONFIG_NAME
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, "1", None])
def test_unsupported_format_version(model_dir: Path, version: object) -> None:
    _edit_config(model_dir, format_version=version)
    with pytest.raises(ModelError, match="format version"):
        load_model(model_dir, kind="oneseg")


def test_corrupt_config(model_dir: Path) -> None:
    (model_dir / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(model_dir, kind="oneseg")
    (model_dir / CONFIG_NAME).write_text("[1, 2]")
    with pytest.raises(ModelError, match="expected 'oneseg'"):
        load_model(model_dir, kind="oneseg")


def test_missing_folder_and_files(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as exc:
        load_model(tmp_path / "nothing", kind="oneseg")
    assert "nothing" in str(exc.value)
    (model_dir / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelError, match=f"no {WEIGHTS_NAME}"):
        load_model(model_dir, kind="oneseg")
    (model_dir / CONFIG_NAME).unlink()
    with pytest.raises(ModelError, match=f"no {CONFIG_NAME}"):
        load_model(model_dir, kind="oneseg")
