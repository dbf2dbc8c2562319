"""OneSeg training through the shared loop: progress reports, schedules, the time limit."""

from __future__ import annotations

import pytest
import torch

from sparseseg.data.phantom import make_phantom
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.preprocess import volume_to_slices
from sparseseg.oneseg.training import OneSegTrainer, TrainConfig, TrainState, scheduled_weight
from sparseseg.runstate import RunClock

TINY_NET = NetworkConfig(width=8, embedding=8, radius=3)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def volumes() -> list[torch.Tensor]:
    out = []
    for seed in range(2):
        image, _ = make_phantom(shape=(32, 32, 10), spacing=(2.0, 2.0, 4.0), seed=30 + seed)
        out.append(volume_to_slices(image.array, size=32))
    return out


def _trainer(volumes, **config) -> OneSegTrainer:
    settings = TrainConfig(**{"epochs": 2, "pairs_per_epoch": 12, "batch_size": 4, "size": 32,
                              "clusters": 3, "seed": 0, **config})
    return OneSegTrainer(volumes, network=TINY_NET, config=settings, device=torch.device("cpu"))


def test_fit_reports_every_step_with_epochs_from_one(volumes) -> None:
    trainer = _trainer(volumes)
    states: list[TrainState] = []
    net = trainer.fit(states.append)
    assert [(s.epoch, s.step, s.total_steps) for s in states] == (
        [(1, i, 6) for i in (1, 2, 3)] + [(2, i, 6) for i in (4, 5, 6)])
    assert [s.lr for s in states] == [1e-4] * 3 + [5e-5] * 3  # halved after each epoch
    # scheduled sampling follows the steps done before each step: 0.9 -> 0.5
    assert [s.ss_weight for s in states] == [scheduled_weight(i / 6) for i in range(6)]
    assert all(s.loss > 0 for s in states) and not net.training
    assert (trainer.epoch, trainer.epoch_step, trainer.step, trainer.finished) == (3, 0, 6, True)
    assert trainer.optimizer.param_groups[0]["lr"] == 2.5e-5


def test_time_limit_ends_the_run_without_halving_the_rate(volumes, monkeypatch) -> None:
    """At 20 s a step a 1-minute budget ends the run of 4 epochs after its 3rd step, the last
    of epoch 1; scheduled sampling follows the time used when it is further along than the
    steps."""
    trainer = _trainer(volumes, epochs=4, max_time=1.0)
    clock = {"t": 0.0}
    sample = trainer._sample_batch

    def timed(triples):
        clock["t"] += 20.0
        return sample(triples)

    monkeypatch.setattr(trainer, "_sample_batch", timed)
    monkeypatch.setattr(RunClock, "local", lambda self: self.offset + clock["t"])
    states: list[TrainState] = []
    trainer.fit(states.append)
    assert [(s.epoch, s.step, s.elapsed) for s in states] == [(1, 1, 20.0), (1, 2, 40.0),
                                                              (1, 3, 60.0)]
    # before each step: max(steps done / 12, seconds used / 60)
    assert [s.ss_weight for s in states] == [scheduled_weight(0.0), scheduled_weight(1 / 3),
                                             scheduled_weight(2 / 3)]
    assert trainer.finished and trainer.epoch == 2
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-4  # the stopped epoch keeps its rate
