"""Resumable training checkpoints: round trips, atomic writes, and refusal of anything else."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparseseg import runstate
from sparseseg.errors import ModelError
from sparseseg.runstate import (
    RunCheckpoint,
    RunState,
    encode,
    load_optimizer_state,
    optimizer_state,
    prefixed,
    read_run_state,
    rng_state,
    set_rng_state,
    unprefixed,
    write_atomic,
)

FINGERPRINT = {"training": {"epochs": 3, "lr": 1e-3}, "data": "a" * 64, "world_size": 1}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1))


def _steps(model, optimizer, scheduler, generator, n: int) -> None:
    for _ in range(n):
        x = torch.randn(2, 1, 8, 8, generator=generator)
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def _make(kind: str, model: nn.Module):
    if kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=3e-5)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True), None


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_optimizer_scheduler_and_weights_round_trip(tmp_path: Path, kind: str) -> None:
    """Continuing from a saved file gives exactly the weights of an uninterrupted run."""
    gen = torch.Generator().manual_seed(1)
    straight = _model()
    opt_straight, sched = _make(kind, straight)
    _steps(straight, opt_straight, sched, gen, 6)

    gen = torch.Generator().manual_seed(1)
    first = _model()
    opt, sched = _make(kind, first)
    _steps(first, opt, sched, gen, 3)
    optim_json, optim_tensors = optimizer_state(opt)
    meta = {"optimizer": optim_json, "scheduler": sched.state_dict() if sched else None}
    state = RunState(meta=meta, tensors={**prefixed("net", first.state_dict()), **optim_tensors})
    path = tmp_path / "resume.safetensors"
    write_atomic(path, encode(state, kind="oneseg", fingerprint=FINGERPRINT,
                              rng=[rng_state(None, gen)]))

    doc, loaded = read_run_state(path, kind="oneseg", fingerprint=FINGERPRINT)
    second = _model(seed=99)  # other initial weights: everything must come from the file
    opt2, sched2 = _make(kind, second)
    second.load_state_dict(unprefixed("net", loaded.tensors))
    load_optimizer_state(opt2, loaded.meta["optimizer"], loaded.tensors)
    if sched2 is not None:
        sched2.load_state_dict(loaded.meta["scheduler"])
    gen2 = torch.Generator()
    set_rng_state(doc["rng"][0], None, gen2)
    _steps(second, opt2, sched2, gen2, 3)

    assert opt2.param_groups[0]["lr"] == opt_straight.param_groups[0]["lr"]
    for (name, a), b in zip(straight.state_dict().items(), second.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_rng_states_round_trip_through_json() -> None:
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(7)
    rng.random(3), torch.rand(2, generator=gen), torch.rand(1)
    state = json.loads(json.dumps(rng_state(rng, gen)))
    want = (rng.random(4), torch.rand(4, generator=gen), torch.rand(4))
    rng2, gen2 = np.random.default_rng(0), torch.Generator()
    torch.manual_seed(0)
    set_rng_state(state, rng2, gen2)
    got = (rng2.random(4), torch.rand(4, generator=gen2), torch.rand(4))
    np.testing.assert_array_equal(want[0], got[0])
    assert torch.equal(want[1], got[1]) and torch.equal(want[2], got[2])


@pytest.fixture
def checkpoint_file(tmp_path: Path) -> Path:
    state = RunState(meta={"step": 3}, tensors={"net.w": torch.arange(6.0).reshape(2, 3),
                                                 "optimizer.0.step": torch.tensor(3.0)})
    path = tmp_path / runstate.RESUME_NAME
    write_atomic(path, encode(state, kind="ltuda", fingerprint=FINGERPRINT, rng=[{}]))
    return path


def test_file_is_plain_safetensors_with_a_json_header(checkpoint_file: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(checkpoint_file), "pt") as fh:
        doc = json.loads(fh.metadata()[runstate.META_KEY])
        assert sorted(fh.keys()) == ["net.w", "optimizer.0.step"]
    assert doc["format"] == runstate.FORMAT and doc["kind"] == "ltuda"
    assert doc["meta"] == {"step": 3} and doc["fingerprint"] == FINGERPRINT
    assert doc["environment"]["torch"] == torch.__version__
    assert oct(checkpoint_file.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Payload:
    """Unpickling this object would create a marker file (what a malicious pickle can do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_in_place_of_the_checkpoint_is_refused(checkpoint_file: Path,
                                                      tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state": _Payload(marker)})
    pickle.loads(payload)  # the payload really runs when unpickled...
    assert marker.exists()
    marker.unlink()
    checkpoint_file.write_bytes(payload)
    with pytest.raises(ModelError, match="not a sparseseg training checkpoint") as exc:
        read_run_state(checkpoint_file, kind="ltuda")
    assert str(checkpoint_file) in str(exc.value)
    assert not marker.exists()  # ...but is never unpickled here
    torch.save({"w": torch.zeros(2)}, checkpoint_file)
    with pytest.raises(ModelError, match="not a sparseseg training checkpoint"):
        read_run_state(checkpoint_file, kind="ltuda")


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.99])
def test_truncated_checkpoint_is_refused(checkpoint_file: Path, keep: float) -> None:
    data = checkpoint_file.read_bytes()
    checkpoint_file.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError) as exc:
        read_run_state(checkpoint_file, kind="ltuda")
    assert str(checkpoint_file) in str(exc.value) and "\n" not in str(exc.value)


def test_other_kind_version_or_plain_safetensors_are_refused(checkpoint_file: Path,
                                                             monkeypatch) -> None:
    with pytest.raises(ModelError, match="'ltuda' training checkpoint, expected 'oneseg'"):
        read_run_state(checkpoint_file, kind="oneseg")
    for version in (runstate.FORMAT_VERSION + 1, runstate.OLDEST_VERSION - 1):
        monkeypatch.setattr(runstate, "FORMAT_VERSION", version)
        other = encode(RunState(meta={}), kind="ltuda", fingerprint=FINGERPRINT, rng=[{}])
        monkeypatch.undo()
        checkpoint_file.write_bytes(other)
        with pytest.raises(ModelError) as exc:
            read_run_state(checkpoint_file, kind="ltuda")
        assert str(exc.value) == (
            f"{checkpoint_file}: training checkpoint format version {version} (sparseseg "
            f"{runstate.__version__}) cannot be continued by sparseseg {runstate.__version__} "
            f"(format {runstate.FORMAT_VERSION}); start without --resume")
    from safetensors.torch import save

    checkpoint_file.write_bytes(save({"w": torch.zeros(2)}))  # a model's weights, say
    with pytest.raises(ModelError, match="not a sparseseg training checkpoint"):
        read_run_state(checkpoint_file, kind="ltuda")
    # A header that claims more bytes than the file has.
    checkpoint_file.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(ModelError, match="not a sparseseg training checkpoint"):
        read_run_state(checkpoint_file, kind="ltuda")


def test_older_format_versions_are_read_with_their_version(checkpoint_file: Path,
                                                           monkeypatch) -> None:
    """Format 1 is still continued: the trainers upgrade its progress
    (:meth:`~sparseseg.runstate.ResumableTrainer.upgrade_meta`)."""
    _, current = read_run_state(checkpoint_file, kind="ltuda")
    assert current.version == runstate.FORMAT_VERSION == 2
    monkeypatch.setattr(runstate, "FORMAT_VERSION", 1)
    old = encode(RunState(meta={"step": 3}), kind="ltuda", fingerprint=FINGERPRINT, rng=[{}])
    monkeypatch.undo()
    checkpoint_file.write_bytes(old)
    _, state = read_run_state(checkpoint_file, kind="ltuda")
    assert state.version == 1 and state.meta == {"step": 3}


def test_other_settings_or_data_are_refused(checkpoint_file: Path) -> None:
    other = json.loads(json.dumps(FINGERPRINT))
    other["training"]["epochs"] = 5
    other["data"] = "b" * 64
    with pytest.raises(ModelError, match=r"data differs; training\.epochs 3 -> 5") as exc:
        read_run_state(checkpoint_file, kind="ltuda", fingerprint=other)
    assert "without --resume" in str(exc.value)
    _, state = read_run_state(checkpoint_file, kind="ltuda", fingerprint=FINGERPRINT)
    assert state.meta == {"step": 3}


def test_a_failed_write_keeps_the_old_checkpoint(checkpoint_file: Path, monkeypatch) -> None:
    before = checkpoint_file.read_bytes()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    new = encode(RunState(meta={"step": 4}), kind="ltuda", fingerprint=FINGERPRINT, rng=[{}])
    with pytest.raises(OSError):
        write_atomic(checkpoint_file, new)
    monkeypatch.undo()
    assert checkpoint_file.read_bytes() == before
    assert runstate.stale_temporaries(checkpoint_file) == []


def test_checkpoint_policy(tmp_path: Path) -> None:
    ckpt = RunCheckpoint(tmp_path / "r.safetensors", kind="oneseg", fingerprint=FINGERPRINT,
                         every_minutes=1.0)
    ckpt.start(10.0)
    assert not ckpt.due(69.0) and ckpt.due(70.0)
    assert ckpt.load() is None  # nothing saved yet
    ckpt.save(lambda: RunState(meta={"step": 1}), {"torch": "x"}, 70.0)
    assert not ckpt.due(100.0) and ckpt.due(130.0)
    state = ckpt.load()
    assert state.meta == {"step": 1} and state.rng == {"torch": "x"}
    stale = tmp_path / ".r.tmp-0123abcd.safetensors"
    stale.write_bytes(b"half a write")
    assert runstate.stale_temporaries(ckpt.path) == [stale]
    ckpt.remove_stale()
    assert not stale.exists() and ckpt.path.exists()
    never = RunCheckpoint(ckpt.path, kind="oneseg", fingerprint=FINGERPRINT, every_minutes=None)
    assert not never.due(1e9)
    other = RunCheckpoint(ckpt.path, kind="oneseg", fingerprint={**FINGERPRINT, "world_size": 2})
    with pytest.raises(ModelError, match="world_size 1 -> 2"):
        other.load()


def test_unwritable_destinations_give_one_line_errors(tmp_path: Path) -> None:
    from sparseseg.checkpoint import save_model
    from sparseseg.errors import InputError

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ckpt = RunCheckpoint(blocker / "m" / runstate.RESUME_NAME, kind="oneseg",
                         fingerprint=FINGERPRINT)
    with pytest.raises(InputError, match="cannot write training checkpoint") as exc:
        ckpt.save(lambda: RunState(meta={}), {}, 0.0)
    assert str(ckpt.path) in str(exc.value)
    with pytest.raises(InputError, match="cannot write the model"):
        save_model(blocker / "m", kind="oneseg", config={}, state={"w": torch.zeros(1)})
