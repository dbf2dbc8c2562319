"""OneSeg training that survives a kill: resumable checkpoints, ``--resume``, refusals."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from sparseseg import oneseg, runstate
from sparseseg.checkpoint import WEIGHTS_NAME
from sparseseg.cli.main import main
from sparseseg.distributed import DistInfo
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.training import OneSegTrainer, TrainConfig
from sparseseg.runstate import PAUSE_ENV, RESUME_NAME, RunCheckpoint, RunState, read_run_state

TINY_NET = NetworkConfig(width=8, embedding=8, radius=3)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# A run of 2 epochs x 8 steps with the default network (CLI and API alike).
RUN = {"epochs": 2, "size": 32, "pairs_per_epoch": 32, "batch_size": 4, "seed": 3}
CLI_RUN = ["--epochs", "2", "--size", "32", "--pairs-per-epoch", "32", "--batch-size", "4",
           "--seed", "3", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread, as in the subprocesses (bit-identical results need the same threads; and
    several threads on a busy machine are much slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / WEIGHTS_NAME))


def _volumes(phantom_folder: Path) -> list[torch.Tensor]:
    from sparseseg.io import find_cases, read_volume
    from sparseseg.oneseg.preprocess import volume_to_slices

    return [volume_to_slices(read_volume(c.image).array, size=32)
            for c in find_cases([phantom_folder / "train"])]


class _InterruptError(Exception):
    pass


@pytest.mark.parametrize("pairs", ["screened", "random"])
def test_resume_in_the_middle_of_an_epoch_gives_the_same_network(phantom_folder, tmp_path,
                                                                 pairs) -> None:
    """Stop after step 8 (epoch 2 of 3, 6 steps each), continue in a new trainer."""
    volumes = _volumes(phantom_folder)
    config = TrainConfig(epochs=3, pairs_per_epoch=24, batch_size=4, size=32, clusters=3,
                         pairs=pairs, seed=1)

    def trainer() -> OneSegTrainer:
        return OneSegTrainer(volumes, network=TINY_NET, config=config,
                             device=torch.device("cpu"))

    straight = trainer()
    straight.fit()

    first = trainer()
    path = tmp_path / RESUME_NAME
    ckpt = RunCheckpoint(path, kind="oneseg", fingerprint=first.fingerprint(), every_minutes=0)

    def stop(state) -> None:
        if state.step == 8:
            raise _InterruptError

    with pytest.raises(_InterruptError):
        first.fit(stop, checkpoint=ckpt)
    _, saved = read_run_state(path, kind="oneseg")
    # Epochs count from 1: step 8 is the 2nd of epoch 2 (the checkpoint precedes it).
    assert (saved.meta["epoch"], saved.meta["epoch_step"], saved.meta["step"]) == (2, 1, 7)
    assert saved.meta["pairs"] and not saved.meta["finished"]

    # The same checkpoint as format 1 wrote it (older sparseseg): epochs done, from 0.
    old = tmp_path / "format1.safetensors"
    doc, state = read_run_state(path, kind="oneseg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runstate, "FORMAT_VERSION", 1)
        old.write_bytes(runstate.encode(
            RunState(meta={**state.meta, "epoch": state.meta["epoch"] - 1},
                     tensors=state.tensors), kind="oneseg", fingerprint=doc["fingerprint"],
            rng=doc["rng"]))

    for source in (path, old):
        second = trainer()  # fresh weights and generators: all must come from the file
        ckpt = RunCheckpoint(source, kind="oneseg", fingerprint=second.fingerprint(),
                             every_minutes=0)
        second.restore(ckpt.load())
        assert (second.epoch, second.epoch_step, second.step) == (2, 1, 7)
        second.fit(checkpoint=ckpt)
        for (name, a), b in zip(straight.net.state_dict().items(),
                                second.net.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
        assert second.scheduler.get_last_lr() == straight.scheduler.get_last_lr()
        _, final = read_run_state(source, kind="oneseg")
        assert final.meta["finished"] and final.meta["step"] == 18
        assert final.meta["epoch"] == 4  # all 3 epochs done


def test_resume_refuses_a_different_number_of_processes(phantom_folder, tmp_path) -> None:
    volumes = _volumes(phantom_folder)[:1]
    config = TrainConfig(epochs=1, pairs_per_epoch=8, batch_size=4, size=32, clusters=3)
    one = OneSegTrainer(volumes, network=TINY_NET, config=config, device=torch.device("cpu"))
    two = OneSegTrainer(volumes, network=TINY_NET, config=config, device=torch.device("cpu"),
                        dist=DistInfo(rank=0, world_size=2))
    assert two.steps_per_epoch == 1 and one.steps_per_epoch == 2  # the epoch is split
    path = tmp_path / RESUME_NAME
    one.fit(checkpoint=RunCheckpoint(path, kind="oneseg", fingerprint=one.fingerprint()))
    with pytest.raises(Exception, match="world_size 1 -> 2"):
        RunCheckpoint(path, kind="oneseg", fingerprint=two.fingerprint()).load()


def _reference(images: Path, output: Path) -> Path:
    """The uninterrupted run, in this process (with the subprocesses' single thread)."""
    return oneseg.train(images=[images], output=output, device="cpu", progress=False,
                        checkpoint_every=0, **RUN)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended (code {process.returncode}) before the kill")
        if time.monotonic() > end:
            process.kill()
            raise AssertionError("timed out waiting for a checkpoint")
        time.sleep(0.01)


def test_kill_9_during_a_checkpoint_write_then_resume(phantom_folder, tmp_path) -> None:
    """SIGKILL while the second checkpoint is being written: the first still loads, and
    ``--resume`` finishes with exactly the weights of an uninterrupted run."""
    out = tmp_path / "model"
    command = [sys.executable, "-m", "sparseseg", "-q", "oneseg", "train",
               "-i", str(phantom_folder / "train"), "-o", str(out), *CLI_RUN]
    env = {**os.environ, **ONE_THREAD}
    # Checkpoint after every step; each write pauses between temporary file and rename.
    process = subprocess.Popen([*command, "--checkpoint-every", "1e-6"],
                               env={**env, PAUSE_ENV: "1.0"})
    resume_file = out / RESUME_NAME
    temporaries = lambda: list(out.glob(f".{resume_file.stem}.tmp-*"))  # noqa: E731
    _wait_for(lambda: resume_file.exists() and temporaries(), process)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert temporaries()  # the interrupted write's temporary file is left behind...
    _, saved = read_run_state(resume_file, kind="oneseg")  # ...the previous checkpoint loads
    assert saved.meta["step"] >= 1 and not saved.meta["finished"]
    assert not (out / WEIGHTS_NAME).exists()

    # Resume in this process (one thread, like the killed one): a new process is not needed
    # to read the checkpoint, and it saves seconds of imports.
    assert main([*command[3:], "--resume"]) == 0
    assert not temporaries()
    reference = _reference(phantom_folder / "train", tmp_path / "reference")
    a, b = _weights(reference), _weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    config = json.loads((out / "config.json").read_text())
    env_info = config["environment"]
    assert config["training"]["seed"] == 3
    assert env_info["argv"] == sys.argv and shlex.split(env_info["command"]) == sys.argv
    assert env_info["torch"] == torch.__version__ and env_info["sparseseg"]
    assert env_info["python"] and env_info["monai"] and env_info["numpy"]


def _train_cli(images: Path, out: Path, *extra: str) -> int:
    return main(["-q", "oneseg", "train", "-i", str(images), "-o", str(out), "--size", "32",
                 "--epochs", "1", "--pairs-per-epoch", "8", "--batch-size", "4",
                 "--device", "cpu", *extra])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_resume_refusals_and_safe_loading(phantom_folder, tmp_path, capsys) -> None:
    images, out = phantom_folder / "train", tmp_path / "m"
    assert _train_cli(images, out, "--resume") == 0  # nothing to resume: starts from scratch
    assert "no checkpoint to resume from" in capsys.readouterr().err
    resume_file = out / RESUME_NAME
    _, saved = read_run_state(resume_file, kind="oneseg")
    assert saved.meta["finished"] and saved.meta["step"] == 2
    first = _weights(out)
    assert _train_cli(images, out, "--resume") == 0  # finished: same model again
    assert all(torch.equal(first[k], v) for k, v in _weights(out).items())

    assert _train_cli(images, out, "--resume", "--seed", "4") == 2
    err = _error(capsys)
    assert str(resume_file) in err and "training.seed 0 -> 4" in err
    assert _train_cli(phantom_folder / "image.nii.gz", out, "--resume") == 2
    assert "data differs" in _error(capsys)

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    resume_file.write_bytes(payload)
    assert _train_cli(images, out, "--resume") == 2
    assert "not a sparseseg training checkpoint" in _error(capsys)
    assert not marker.exists()
    resume_file.write_bytes(b"")
    assert _train_cli(images, out, "--resume") == 2
    err = _error(capsys)
    assert f"{resume_file}: is not a sparseseg training checkpoint" in err

    # The model folder itself: pickled weights, a truncated file, a newer format.
    image = str(phantom_folder / "image.nii.gz")
    weights = out / WEIGHTS_NAME
    good = weights.read_bytes()
    weights.write_bytes(payload)
    assert main(["oneseg", "select", "-m", str(out), "-i", image]) == 2
    assert "corrupt weights" in _error(capsys) and not marker.exists()
    weights.write_bytes(good[: len(good) // 2])
    assert main(["oneseg", "select", "-m", str(out), "-i", image]) == 2
    assert str(weights) in _error(capsys)
    weights.write_bytes(good)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    assert main(["oneseg", "select", "-m", str(out), "-i", image]) == 2
    assert "format version 99" in _error(capsys)


class _Payload:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
