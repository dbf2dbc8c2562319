"""Data-parallel training under torchrun: 2 CPU processes (gloo) on tiny phantoms.

The test starts ``torchrun --nproc_per_node=2`` on this very file; run as a script, it is the
worker: each process runs ``sparseseg oneseg train`` and ``sparseseg ltuda train`` through the
CLI entry point (as ``torchrun -m sparseseg ...`` does) and records digests of what it drew and
what it trained, which the test then compares across the processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparseseg import distributed
from sparseseg.distributed import DistInfo, env_info
from sparseseg.errors import SparsesegError

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
WORKER_TIMEOUT = 240


# ---------------------------------------------------------------------------- single process
def test_env_info_reads_torchrun_variables() -> None:
    assert env_info({}) == DistInfo()
    info = env_info({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.enabled and not info.is_main
    with pytest.raises(SparsesegError, match="RANK='x' is not an integer"):
        env_info({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"})
    with pytest.raises(SparsesegError, match="inconsistent torchrun environment"):
        env_info({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def test_helpers_are_identities_without_a_process_group(monkeypatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    device = torch.device("cpu")
    with distributed.session(device) as (info, dev):
        assert info == DistInfo() and dev == device
        assert not torch.distributed.is_initialized()
    assert distributed.agree(1.5) == 1.5
    assert distributed.broadcast_json({"a": [1]}) == {"a": [1]}
    assert distributed.all_gather_json({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_bytes(b"xy") == b"xy"
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(2.0)
    distributed.sync_buffers(bn)
    assert torch.equal(bn.running_mean, torch.full((3,), 2.0))


# ---------------------------------------------------------------------------- torchrun
def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


class _InterruptError(Exception):
    pass


def _worker(work: Path, images: Path, set_a: Path, set_b: Path) -> None:
    """One torchrun process: train both models through the CLI, record digests."""
    import faulthandler

    from sparseseg.cli.main import main

    faulthandler.dump_traceback_later(WORKER_TIMEOUT, exit=True)  # never hang a test run
    from sparseseg.ltuda import data as ltuda_data
    from sparseseg.ltuda import trainer as ltuda_trainer
    from sparseseg.oneseg import training

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    record: dict[str, list] = {"oneseg": [], "ltuda": [], "batches": []}
    interrupt = {"at": None}

    fit = training.OneSegTrainer.fit

    def recording_fit(self, callback=None, *, checkpoint=None):
        sample = self._sample_batch

        def sample_batch(triples):
            out = sample(triples)
            record["batches"].append(_digest(out))
            return out

        def step(state):
            callback(state)
            if state.step == interrupt["at"]:
                raise _InterruptError

        self._sample_batch = sample_batch
        net = fit(self, step, checkpoint=checkpoint)
        record["oneseg"].append({
            "weights": _digest(net.state_dict().values()),
            "optimizer": _digest(self.optimizer.state[q][k] for g in self.optimizer.param_groups
                                 for q in g["params"] for k in sorted(self.optimizer.state[q])),
            "world_size": self.dist.world_size, "steps": self.step,
        })
        return net

    training.OneSegTrainer.fit = recording_fit
    oneseg = ["-q", "oneseg", "train", "-i", str(images), "--size", "32", "--epochs", "2",
              "--pairs-per-epoch", "16", "--batch-size", "2", "--device", "cpu"]
    assert main([*oneseg, "-o", str(work / "oneseg"), "--checkpoint-every", "0"]) == 0
    # Interrupted after 3 of 8 steps (checkpoint at every step), then resumed.
    interrupt["at"] = 3
    try:
        main([*oneseg, "-o", str(work / "oneseg_resumed"), "--checkpoint-every", "1e-6"])
        raise AssertionError("not interrupted")
    except _InterruptError:
        pass
    interrupt["at"] = None
    assert main([*oneseg, "-o", str(work / "oneseg_resumed"), "--resume"]) == 0

    fit_ltuda = ltuda_trainer.Trainer.fit
    batch = ltuda_data.SliceSampler.batch

    def recording_batch(self):
        out = batch(self)
        record["batches"].append(_digest(out))
        return out

    def recording_fit_ltuda(self, callback=None, *, on_epoch=None, checkpoint=None):
        fit_ltuda(self, callback, on_epoch=on_epoch, checkpoint=checkpoint)
        record["ltuda"].append({
            "model": _digest(self.model.state_dict().values()),  # weights, BN, prototypes
            "teacher": _digest(self.teacher.state_dict().values()),
            "stage": self.stage, "steps": self.step, "epoch": self.epoch,
            "history": [r.epoch for r in self.history],
        })

    ltuda_trainer.Trainer.fit = recording_fit_ltuda
    ltuda_data.SliceSampler.batch = recording_batch
    assert main(["-q", "ltuda", "train", "-o", str(work / "ltuda"), "--dataset", str(set_a),
                 "liver=1", "--dataset", str(set_b), "spleen=2", "kidney=3", "--size", "32",
                 "--base-channels", "4", "--epochs", "4", "--val-fraction", "0.34",
                 "--device", "cpu"]) == 0
    (work / f"rank{rank}.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def torchrun_result(tmp_path_factory) -> tuple[Path, list[dict]]:
    from sparseseg.data import make_phantom, make_phantom_dataset
    from sparseseg.io import write_volume

    root = tmp_path_factory.mktemp("ddp")
    (root / "images").mkdir()
    for seed in range(2):
        image, _ = make_phantom(shape=(40, 36, 12), spacing=(2.0, 2.0, 4.0), seed=20 + seed)
        write_volume(root / "images" / f"p{seed}.nii.gz", image.array, image)
    set_a = make_phantom_dataset(root / "A", n_cases=3, shape=(40, 36, 6), seed=0)
    set_b = make_phantom_dataset(root / "B", n_cases=3, shape=(40, 36, 6), seed=10)
    work = root / "work"
    work.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", __file__, str(work), str(root / "images"), str(set_a),
               str(set_b)]
    process = subprocess.Popen(command, env={**os.environ, **ONE_THREAD}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=WORKER_TIMEOUT + 60)
    except subprocess.TimeoutExpired:
        process.terminate()  # torchrun passes SIGTERM on to its workers
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out[-3000:] + err[-6000:]
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in range(2)]
    return root, ranks


def test_processes_draw_different_batches_and_hold_identical_weights(torchrun_result) -> None:
    _, (r0, r1) = torchrun_result
    assert len(r0["oneseg"]) == len(r1["oneseg"]) == 2  # the interrupted run records nothing
    for a, b in zip(r0["oneseg"], r1["oneseg"], strict=True):
        assert a["world_size"] == 2
        assert a["weights"] == b["weights"] and a["optimizer"] == b["optimizer"]
    straight, resumed = r0["oneseg"]
    assert straight["steps"] == 8  # 16 pairs / batch 2 / 2 processes x 2 epochs
    assert resumed == straight  # interrupted and resumed under torchrun: the same result
    (a,), (b,) = r0["ltuda"], r1["ltuda"]
    # Rank 0 alone validates (and keeps the epoch results); the 4 epochs end on both.
    assert a.pop("history") == [1, 2, 3, 4] and b.pop("history") == []
    assert a == b and a["stage"] == 2  # student, buffers, prototypes and teacher agree
    assert a["epoch"] == 5  # epochs count from 1: all 4 done
    # Each process samples its own data (seed + rank).
    assert r0["batches"][0] != r1["batches"][0]
    assert not set(r0["batches"]) & set(r1["batches"])


def test_rank_0_writes_models_that_load_and_predict(torchrun_result, tmp_path) -> None:
    from sparseseg import oneseg
    from sparseseg.ltuda import predict
    from sparseseg.oneseg.model import OneSegModel
    from sparseseg.runstate import RESUME_NAME

    root, (r0, _) = torchrun_result
    work = root / "work"
    files = sorted(p.name for p in (work / "oneseg").iterdir())
    assert files == ["config.json", "model.safetensors"]  # no stray files from rank 1
    config = json.loads((work / "oneseg" / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"}
    model = OneSegModel.load(work / "oneseg")
    assert _digest(model.net.state_dict().values()) == r0["oneseg"][0]["weights"]
    image = sorted((root / "images").iterdir())[0]
    k = oneseg.select(model=model, image=image)
    from sparseseg.io import read_volume

    volume = read_volume(image)
    annotation = np.zeros(volume.shape, np.uint8)
    annotation[10:30, 10:26, k] = 1
    labels = oneseg.propagate(model=model, image=image, annotation=annotation)
    assert labels.array.shape == volume.shape and labels.array[:, :, k].any()
    assert (work / "oneseg_resumed" / RESUME_NAME).exists()

    ltuda_config = json.loads((work / "ltuda" / "config.json").read_text())
    assert ltuda_config["distributed"]["world_size"] == 2
    assert ltuda_config["best_epoch"] >= 1
    out = predict(model=work / "ltuda", inputs=root / "B", output=tmp_path / "pred",
                  progress=False)
    assert len(out) == 3 and all(p.exists() for p in out)


if __name__ == "__main__":
    _worker(*(Path(a) for a in sys.argv[1:5]))
