"""The training loop both trainers run: epoch counting, time limit, checkpoints, reports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sparseseg.runstate import RunCheckpoint, RunClock, read_run_state
from sparseseg.training_loop import LoopTrainer, Position, StepReport

SECONDS_PER_STEP = 10.0


class _Recorder(LoopTrainer):
    """A trainer whose steps only record what the loop told them; each step takes 10 s of a
    fake clock (``now``)."""

    def __init__(self, steps_per_epoch: int = 2) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.epoch, self.epoch_step, self.step = 1, 0, 0
        self.elapsed, self.finished = 0.0, False
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        self.rng = np.random.default_rng(0)
        self.generator = torch.Generator().manual_seed(0)
        self.device = torch.device("cpu")
        self.now = 0.0
        self.events: list[tuple] = []
        self.positions: list[Position] = []
        self.saved_at: list[float] = []

    def begin_epoch(self) -> None:
        self.events.append(("begin", self.epoch, self.epoch_step))

    def fit_step(self, position: Position) -> Mapping[str, float]:
        self.positions.append(position)
        self.now += SECONDS_PER_STEP
        return {"loss": float(position.step)}

    def end_epoch(self, *, stopped: bool, clock: RunClock) -> Any:
        self.events.append(("end", self.epoch, self.epoch_step, stopped))
        return f"epoch {self.epoch}"

    def _save(self, checkpoint: RunCheckpoint, elapsed: float) -> None:
        self.saved_at.append(elapsed)
        super()._save(checkpoint, elapsed)

    def _run_meta(self) -> dict[str, Any]:
        return {}

    def _run_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _restore_run(self, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        pass


@pytest.fixture
def trainer(monkeypatch) -> _Recorder:
    recorder = _Recorder()
    monkeypatch.setattr(RunClock, "local", lambda self: self.offset + recorder.now)
    return recorder


def test_epochs_count_from_one_in_positions_reports_and_hooks(trainer: _Recorder) -> None:
    reports: list[StepReport] = []
    epochs: list[str] = []
    trainer.run_epochs(epochs=2, max_time=None, callback=reports.append, on_epoch=epochs.append)
    assert [(p.epoch, p.epoch_step, p.step) for p in trainer.positions] == [
        (1, 0, 0), (1, 1, 1), (2, 0, 2), (2, 1, 3)]
    assert all(p.time_fraction is None and p.epochs == 2 for p in trainer.positions)
    assert [(r.epoch, r.epoch_step, r.step, r.total_steps) for r in reports] == [
        (1, 1, 1, 4), (1, 2, 2, 4), (2, 1, 3, 4), (2, 2, 4, 4)]
    assert [r.values for r in reports] == [{"loss": 0.0}, {"loss": 1.0}, {"loss": 2.0},
                                           {"loss": 3.0}]
    assert [r.elapsed for r in reports] == [10.0, 20.0, 30.0, 40.0]
    assert trainer.events == [("begin", 1, 0), ("end", 1, 2, False),
                              ("begin", 2, 0), ("end", 2, 2, False)]
    assert epochs == ["epoch 1", "epoch 2"]
    assert (trainer.epoch, trainer.epoch_step, trainer.step, trainer.finished) == (3, 0, 4, True)
    trainer.run_epochs(epochs=2, max_time=None)  # finished: nothing more
    assert len(trainer.positions) == 4


def test_position_fractions() -> None:
    position = Position(epoch=2, epoch_step=1, step=4, steps_per_epoch=3, epochs=2,
                        elapsed=42.0, time_fraction=None)
    assert position.total_steps == 6
    assert position.steps_fraction == 4 / 6
    assert position.epochs_fraction == (1 + 1 / 3) / 2
    assert position.progress(0.25) == 0.25
    timed = Position(epoch=1, epoch_step=0, step=0, steps_per_epoch=3, epochs=2, elapsed=42.0,
                     time_fraction=0.7)
    assert timed.progress(0.25) == 0.7 and timed.progress(0.9) == 0.9


def test_time_limit_stops_after_the_step_that_reaches_it(trainer: _Recorder) -> None:
    """30 s allowed at 10 s a step: the 3rd step (the first of epoch 2) ends the run, and the
    epoch it stopped in is ended (stopped)."""
    epochs: list[str] = []
    trainer.run_epochs(epochs=5, max_time=0.5, on_epoch=epochs.append)
    assert [p.time_fraction for p in trainer.positions] == [0.0, 1 / 3, 2 / 3]
    assert [p.elapsed for p in trainer.positions] == [0.0, 10.0, 20.0]
    assert trainer.events[-1] == ("end", 2, 1, True)
    assert epochs == ["epoch 1", "epoch 2"]
    assert (trainer.epoch, trainer.step, trainer.finished) == (3, 3, True)


def test_time_limit_is_read_on_rank_0s_clock(trainer: _Recorder, monkeypatch) -> None:
    """Decisions use ``agreed()`` (rank 0's reading), not this process's own clock."""
    monkeypatch.setattr(RunClock, "agreed", lambda self: self.local() + 100.0)
    trainer.run_epochs(epochs=5, max_time=0.5)
    assert len(trainer.positions) == 1 and trainer.positions[0].elapsed == 100.0
    assert trainer.events == [("begin", 1, 0), ("end", 1, 1, True)]


def test_checkpoints_when_due_after_steps_and_epochs_and_at_the_end(trainer: _Recorder,
                                                                   tmp_path: Path) -> None:
    """Every 15 s of training at 10 s a step: after steps 2 and 4 (and the end); a resumed
    run's clock continues from the checkpoint's training time."""
    path = tmp_path / "resume.safetensors"
    checkpoint = RunCheckpoint(path, kind="oneseg", fingerprint={}, every_minutes=0.25)
    trainer.run_epochs(epochs=2, max_time=None, checkpoint=checkpoint)
    assert trainer.saved_at == [20.0, 40.0, 40.0]
    _, state = read_run_state(path, kind="oneseg")
    assert (state.meta["epoch"], state.meta["step"], state.meta["finished"]) == (3, 4, True)
    assert state.meta["elapsed"] == 40.0

    # A run resumed in the middle of epoch 2 continues it: one step left.
    resumed = _Recorder()
    resumed.epoch, resumed.epoch_step, resumed.step, resumed.elapsed = 2, 1, 3, 30.0
    trainer.now = 0.0  # the patched clock reads this (the fixture's) recorder's time
    resumed.run_epochs(epochs=2, max_time=1.0)
    assert resumed.events == [("begin", 2, 1), ("end", 2, 2, False)]
    (position,) = resumed.positions
    assert (position.epoch, position.epoch_step, position.step) == (2, 1, 3)
    assert position.elapsed == 30.0 and position.time_fraction == 0.5
