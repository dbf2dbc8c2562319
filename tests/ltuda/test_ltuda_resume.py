"""LTUDA training that survives a kill: resumable checkpoints, ``--resume``, refusals."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparseseg import runstate
from sparseseg.cli.main import main
from sparseseg.ltuda import DatasetSpec, train
from sparseseg.ltuda import trainer as trainer_module
from sparseseg.runstate import RESUME_NAME, RunState, read_run_state

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _specs(phantom_sets) -> list[DatasetSpec]:
    liver_set, other_set = phantom_sets
    return [DatasetSpec(liver_set, {"liver": [1]}),
            DatasetSpec(other_set, {"spleen": [2], "kidney": [3]})]


def _cli(phantom_sets, out: Path, *extra: str) -> list[str]:
    liver_set, other_set = phantom_sets
    return ["-q", "ltuda", "train", "-o", str(out), "--dataset", str(liver_set), "liver=1",
            "--dataset", str(other_set), "spleen=2", "kidney=3", "--size", "32",
            "--base-channels", "4", "--val-fraction", "0.34", "--device", "cpu", *extra]


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _rows(folder: Path) -> list[dict]:
    rows = list(csv.DictReader((folder / "log.csv").read_text().splitlines()))
    for row in rows:
        row.pop("elapsed_s")
    return rows


class _InterruptError(Exception):
    pass


def test_resume_in_stage_2_gives_the_same_run(tmp_path, phantom_sets, monkeypatch) -> None:
    """Stop in the middle of epoch 4 of 4 (stage 2), continue from the checkpoint: the model,
    the mean teacher, the optimiser, the best-epoch choice and the log are those of an
    uninterrupted run. The checkpoint is continued as format 1 wrote it (older sparseseg)."""
    kw = {"datasets": _specs(phantom_sets), "method": "ltuda", "epochs": 4, "size": 32,
          "base_channels": 4, "progress": False, "val_fraction": 0.34, "device": "cpu"}
    straight = train(output=tmp_path / "straight", **kw)
    fit = trainer_module.Trainer.fit

    def interrupted(self, callback=None, *, on_epoch=None, checkpoint=None):
        def step(report):
            if (report.epoch, report.epoch_step) == (4, 2):
                raise _InterruptError
        return fit(self, step, on_epoch=on_epoch, checkpoint=checkpoint)

    monkeypatch.setattr(trainer_module.Trainer, "fit", interrupted)
    out = tmp_path / "resumed"
    with pytest.raises(_InterruptError):
        train(output=out, checkpoint_every=1e-9, **kw)
    monkeypatch.setattr(trainer_module.Trainer, "fit", fit)
    _, saved = read_run_state(out / RESUME_NAME, kind="ltuda")
    assert (saved.meta["epoch"], saved.meta["epoch_step"], saved.meta["stage"]) == (4, 1, 2)
    assert [r["epoch"] for r in saved.meta["history"]] == [1, 2, 3]
    best = json.loads((out / "config.json").read_text())["best_epoch"]
    assert saved.meta["best"]["epoch"] == best
    assert any(k.startswith("teacher.") for k in saved.tensors)
    _as_format_1(out / RESUME_NAME, organs=["liver", "spleen", "kidney"])

    train(output=out, resume=True, **kw)
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    _, a = read_run_state(straight / RESUME_NAME, kind="ltuda")
    _, b = read_run_state(out / RESUME_NAME, kind="ltuda")
    _same_tensors(a.tensors, b.tensors)  # weights, teacher, optimiser moments
    assert _rows(out) == _rows(straight)
    config_a, config_b = (json.loads((f / "config.json").read_text()) for f in (straight, out))
    for key in ("best_epoch", "classifier", "val_dice"):
        assert config_a[key] == config_b[key]
    assert config_b["training"]["seed"] == 0 and config_b["environment"]["torch"]


def _as_format_1(path: Path, organs: list[str]) -> None:
    """Rewrite a checkpoint as format 1 wrote it: the log rows and best epoch of the model
    folder's writer in ``record``."""
    from sparseseg.ltuda.api import _log_row
    from sparseseg.ltuda.trainer import EpochResult

    doc, state = read_run_state(path, kind="ltuda")
    meta = dict(state.meta)
    rows = [_log_row(EpochResult.from_json(r), organs) for r in meta.pop("history")]
    meta["record"] = {"history": rows, "best": meta.pop("best")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runstate, "FORMAT_VERSION", 1)
        data = runstate.encode(RunState(meta=meta, tensors=state.tensors), kind="ltuda",
                               fingerprint=doc["fingerprint"], rng=doc["rng"])
    path.write_bytes(data)
    assert read_run_state(path, kind="ltuda")[1].version == 1


def test_kill_9_in_the_middle_of_training_then_resume(tmp_path, phantom_sets) -> None:
    out = tmp_path / "model"
    args = _cli(phantom_sets, out, "--epochs", "6", "--seed", "2")
    process = subprocess.Popen([sys.executable, "-m", "sparseseg", *args,
                                "--checkpoint-every", "1e-6"], env={**os.environ, **ONE_THREAD})
    resume_file = out / RESUME_NAME

    def progress() -> int:
        try:
            return read_run_state(resume_file, kind="ltuda")[1].meta["step"]
        except Exception:  # not written yet
            return 0

    end = time.monotonic() + 120
    while progress() < 4:
        assert process.poll() is None, "training ended before the kill"
        assert time.monotonic() < end, "no checkpoint written"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    _, saved = read_run_state(resume_file, kind="ltuda")  # whatever the moment, it loads
    assert not saved.meta["finished"]

    assert main([*args, "--resume"]) == 0  # here: one thread like the subprocess
    assert main(_cli(phantom_sets, tmp_path / "straight", "--epochs", "6", "--seed", "2",
                     "--checkpoint-every", "0")) == 0
    straight = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == straight
    assert not (tmp_path / "straight" / RESUME_NAME).exists()  # --checkpoint-every 0
    assert [r["epoch"] for r in _rows(out)] == [str(e) for e in range(1, 7)]


def test_resume_refuses_other_settings(tmp_path, phantom_sets, capsys) -> None:
    out = tmp_path / "m"
    assert main(_cli(phantom_sets, out, "--epochs", "1", "--method", "partial")) == 0
    assert (out / RESUME_NAME).exists()
    for extra, problem in ((["--seed", "1"], "training.seed 0 -> 1"),
                           (["--method", "cda"], "training.method 'partial' -> 'cda'"),
                           (["--size", "16"], "data differs")):
        args = _cli(phantom_sets, out, "--epochs", "1", "--method", "partial", "--resume")
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err and str(out / RESUME_NAME) in err, err
