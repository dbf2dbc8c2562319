"""The training loop both trainers run: epochs, the time limit, checkpoints and progress.

:class:`LoopTrainer` owns everything around the optimisation steps; a trainer
(:class:`~sparseseg.oneseg.training.OneSegTrainer`, the LTUDA
:class:`~sparseseg.ltuda.trainer.Trainer`) supplies three hooks:

* :meth:`~LoopTrainer.begin_epoch`: before the first step of an epoch (also when a resumed run
  continues in the middle of one);
* :meth:`~LoopTrainer.fit_step`: one optimisation step, given the run's :class:`Position`;
* :meth:`~LoopTrainer.end_epoch`: after the epoch's last step, or after the step at which the
  time limit stopped the run; what it returns goes to the ``on_epoch`` callback.

Epochs are counted from 1 everywhere: ``epoch`` is the number of the epoch under way
(``epochs + 1`` once all are done) in the trainers, their checkpoints, the progress reports
and the training logs. ``step`` counts the steps done in the whole run, ``epoch_step`` those
done in the current epoch.

The time limit (``max_time`` minutes of training, sessions before a resume included) is read
on rank 0's clock (:meth:`~sparseseg.runstate.RunClock.agreed`), so all processes of a
data-parallel run stop after the same step; a run it stops ends the epoch under way
(``end_epoch(stopped=True)``) and is finished. Resumable checkpoints
(:class:`~sparseseg.runstate.RunCheckpoint`) are saved when due after any step or epoch, and
at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sparseseg.runstate import ResumableTrainer, RunCheckpoint, RunClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    """Where a run stands before a step (given to :meth:`LoopTrainer.fit_step`).

    Attributes:
        epoch: The epoch under way (from 1).
        epoch_step: Steps of this epoch done before this one.
        step: Steps of the run done before this one.
        steps_per_epoch: Steps of an epoch (of this process).
        epochs: Epochs of the run.
        elapsed: Training seconds so far (rank 0's reading when there is a time limit).
        time_fraction: ``elapsed`` over the time limit; ``None`` without a limit.
    """

    epoch: int
    epoch_step: int
    step: int
    steps_per_epoch: int
    epochs: int
    elapsed: float
    time_fraction: float | None

    @property
    def total_steps(self) -> int:
        """Steps of the whole run (without a time limit)."""
        return self.epochs * self.steps_per_epoch

    @property
    def steps_fraction(self) -> float:
        """Fraction of the run's steps done: ``step / total_steps``."""
        return self.step / max(1, self.total_steps)

    @property
    def epochs_fraction(self) -> float:
        """Fraction of the run's epochs done: ``(epoch - 1 + epoch_step / steps_per_epoch) /
        epochs``.

        The same number as :attr:`steps_fraction` but for the last bits of the float: OneSeg's
        schedule has always used the one, LTUDA's the other, and each keeps its own so that
        runs give the same weights as before.
        """
        return (self.epoch - 1 + self.epoch_step / self.steps_per_epoch) / self.epochs

    def progress(self, done: float) -> float:
        """The run's progress in ``[0, 1]`` for schedules: ``done`` (a fraction of the epochs
        or steps), or the fraction of the time limit used when that is further along."""
        if self.time_fraction is None:
            return done
        return max(done, self.time_fraction)


@dataclass(frozen=True)
class StepReport:
    """Progress after a step, given to the progress callback.

    Attributes:
        epoch: The epoch under way (from 1).
        step: Steps of the run done, this one included.
        epoch_step: Steps of this epoch done, this one included.
        steps_per_epoch: Steps of an epoch (of this process).
        total_steps: Steps of the whole run (without a time limit).
        elapsed: This process's training seconds.
        values: What the trainer's step reported (losses, learning rate...).
    """

    epoch: int
    step: int
    epoch_step: int
    steps_per_epoch: int
    total_steps: int
    elapsed: float
    values: Mapping[str, float]


class LoopTrainer(ResumableTrainer):
    """A resumable trainer driven by :meth:`run_epochs`.

    Besides what :class:`~sparseseg.runstate.ResumableTrainer` asks for, a subclass sets
    ``steps_per_epoch`` and implements the hooks :meth:`begin_epoch`, :meth:`fit_step` and
    :meth:`end_epoch`. It starts with ``epoch = 1`` and ``epoch_step = step = 0``; the loop
    advances the counters.
    """

    steps_per_epoch: int

    def begin_epoch(self) -> None:
        """Prepare the epoch under way (before its first step, or on resuming inside it)."""

    def fit_step(self, position: Position) -> Mapping[str, float]:
        """Run one optimisation step; return what the progress report shows of it."""
        raise NotImplementedError

    def end_epoch(self, *, stopped: bool, clock: RunClock) -> Any:
        """Close the epoch under way.

        Args:
            stopped: The time limit stopped the run in (or at the end of) this epoch.
            clock: The run's clock (``clock.local()``: this process's training seconds).

        Returns:
            What to pass to ``on_epoch`` (nothing is passed for ``None``).
        """
        return None

    def run_epochs(
        self,
        *,
        epochs: int,
        max_time: float | None,
        callback: Callable[[StepReport], None] | None = None,
        on_epoch: Callable[[Any], None] | None = None,
        checkpoint: RunCheckpoint | None = None,
    ) -> None:
        """Train until ``epochs`` are done or ``max_time`` is used up (or continue a run).

        Continues where a :meth:`restore`-d state left off; a finished run returns at once.

        Args:
            epochs: Epochs of the run.
            max_time: Minutes of training (``None``: no limit).
            callback: Called after every step with a :class:`StepReport`.
            on_epoch: Called with what :meth:`end_epoch` returns, unless ``None``.
            checkpoint: Where and how often to save a resumable checkpoint (also saved at
                the end); ``None``: never.
        """
        clock = RunClock(self.elapsed)
        limit = None if max_time is None else 60.0 * max_time
        steps = self.steps_per_epoch
        if checkpoint is not None:
            checkpoint.start(self.elapsed)
        while self.epoch <= epochs and not self.finished:
            self.begin_epoch()
            stopped = False
            while self.epoch_step < steps:
                elapsed = clock.agreed() if limit is not None else clock.local()
                values = self.fit_step(Position(
                    epoch=self.epoch, epoch_step=self.epoch_step, step=self.step,
                    steps_per_epoch=steps, epochs=epochs, elapsed=elapsed,
                    time_fraction=elapsed / limit if limit else None))
                self.step += 1
                self.epoch_step += 1
                if callback is not None:
                    callback(StepReport(
                        epoch=self.epoch, step=self.step, epoch_step=self.epoch_step,
                        steps_per_epoch=steps, total_steps=epochs * steps,
                        elapsed=clock.local(), values=values))
                if limit is None and checkpoint is None:
                    continue
                now = clock.agreed()
                if limit is not None and now >= limit:
                    log.info("time limit of %g min reached after %d steps (epoch %d)",
                             max_time, self.step, self.epoch)
                    stopped = True
                    break
                if checkpoint is not None and checkpoint.due(now):
                    self._save(checkpoint, now)
            report = self.end_epoch(stopped=stopped, clock=clock)
            if report is not None and on_epoch is not None:
                on_epoch(report)
            self.epoch += 1
            self.epoch_step = 0
            if stopped:
                self.finished = True
                break
            if checkpoint is not None:
                now = clock.agreed()
                if checkpoint.due(now):
                    self._save(checkpoint, now)
        self.finished = True
        if checkpoint is not None:
            self._save(checkpoint, clock.agreed())
