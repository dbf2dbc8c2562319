"""Self-supervised training of the OneSeg reconstruction network.

Each epoch re-screens every training volume with the current network (K-means representative
sets, Eq. 2-4) to get the training pairs, then trains the network to reconstruct a target slice
from a reference slice by local attention (Eq. 8-9), with scheduled sampling (Eq. 10, weight
annealed 0.9 -> 0.5) and cycle consistency (Eq. 11-12, weights 0.9 / 0.1). Adam, learning rate
halved every epoch.

Besides the screened pairs (consecutive representatives, typically several slices apart), each
volume contributes a few short chains of near neighbours (1-3 slices apart) per epoch
(``local_chains``): at test time labels travel one slice per step, and training on large gaps
alone leaves the copy between adjacent slices less precise than plain copying (measured on
LeftAtrium: one-step Dice 0.909 without, 0.925 with, and 0.800 -> 0.829 from the largest slice).

The epochs, the time limit, checkpoints and progress reports are the shared training loop's
(:mod:`sparseseg.training_loop`); this module supplies the steps. Runs can be saved and
continued at any step (:meth:`OneSegTrainer.state`, :meth:`OneSegTrainer.restore`,
:mod:`sparseseg.runstate`) and trained data-parallel under ``torchrun``
(:mod:`sparseseg.distributed`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparseseg import distributed
from sparseseg.distributed import DistInfo
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.network import NetworkConfig, OneSegNet
from sparseseg.oneseg.screening import (
    neighbour_chain,
    random_pairs,
    representative_set,
    screened_pairs,
)
from sparseseg.precision import autocast, precision_name, resolve_precision
from sparseseg.runstate import (
    RunCheckpoint,
    RunClock,
    architecture_digest,
    digest,
    prefixed,
    unprefixed,
)
from sparseseg.training_loop import LoopTrainer, Position, StepReport

log = logging.getLogger(__name__)

PAIR_MODES = ("screened", "random")


@dataclass
class TrainConfig:
    """Training settings (recorded in the model's ``config.json``).

    Args:
        epochs: Number of epochs.
        pairs_per_epoch: Training samples drawn per epoch.
        batch_size: Samples per optimiser step.
        lr: Initial Adam learning rate (halved every epoch).
        size: In-plane size slices are resized to.
        clusters: K of the K-means screening.
        pairs: ``screened`` (OneSeg) or ``random`` (ablation).
        local_chains: Short chains of near-neighbour pairs added per volume and epoch
            (``0``: screened pairs only, as in the paper).
        local_gap: Largest slice gap of those chains.
        scheduled_sampling: Use scheduled sampling.
        ss_start: Initial probability of the true reference.
        ss_end: Final probability of the true reference.
        cycle: Use cycle consistency.
        cycle_weight: Weight of the cycle loss (forward gets ``1 - cycle_weight``).
        max_time: Stop after this many minutes (``None``: no limit).
        seed: Random seed.
        precision: ``auto``, ``fp32`` or ``bf16`` (mixed precision; see
            :mod:`sparseseg.precision`). ``auto`` uses bf16 on GPUs that have it and CPUs with
            AMX, where it trains about 1.5x faster.
    """

    epochs: int = 6
    pairs_per_epoch: int = 1600
    batch_size: int = 8
    lr: float = 1e-4
    size: int = 128
    clusters: int = 10
    pairs: str = "screened"
    local_chains: int = 6
    local_gap: int = 3
    scheduled_sampling: bool = True
    ss_start: float = 0.9
    ss_end: float = 0.5
    cycle: bool = True
    cycle_weight: float = 0.1
    max_time: float | None = None
    seed: int = 0
    precision: str = "auto"


@dataclass
class TrainState:
    """Progress reported to the callback after every step.

    Attributes:
        epoch: The epoch under way (from 1).
        step: Steps of the run done, this one included.
        total_steps: Steps of the whole run (without a time limit).
        loss: The step's loss.
        lr: The learning rate of the step.
        ss_weight: Probability of the true reference in scheduled sampling.
        elapsed: Training seconds.
    """

    epoch: int
    step: int
    total_steps: int
    loss: float
    lr: float
    ss_weight: float
    elapsed: float

    @classmethod
    def from_report(cls, report: StepReport) -> TrainState:
        """The state of a :class:`~sparseseg.training_loop.StepReport` of this trainer."""
        return cls(epoch=report.epoch, step=report.step, total_steps=report.total_steps,
                   loss=report.values["loss"], lr=report.values["lr"],
                   ss_weight=report.values["ss_weight"], elapsed=report.elapsed)


def scheduled_weight(progress: float, start: float = 0.9, end: float = 0.5) -> float:
    """Probability of the true reference at training progress in ``[0, 1]`` (linear)."""
    progress = min(max(progress, 0.0), 1.0)
    return start + (end - start) * progress


def _augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Same random flip and gamma for all slices of one sample: ``(B, T, 1, S, S)``."""
    out = batch.clone()
    for b in range(out.shape[0]):
        if rng.random() < 0.5:
            out[b] = out[b].flip(-1)
        if rng.random() < 0.5:
            out[b] = out[b].flip(-2)
        gamma = float(np.exp(rng.uniform(-0.3, 0.3)))
        out[b] = out[b].clamp_min(0).pow(gamma)
    return out


def _triples(pairs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Turn a chain of pairs into (previous, reference, target) triples.

    The previous slice feeds scheduled sampling: the reference is then replaced by its own
    reconstruction from the previous slice. The first pair of a chain uses the reference itself.
    """
    triples = []
    for i, (ref, tgt) in enumerate(pairs):
        prev = pairs[i - 1][0] if i > 0 and pairs[i - 1][1] == ref else ref
        triples.append((prev, ref, tgt))
    return triples


def reconstruction_loss(
    net: OneSegNet,
    prev: torch.Tensor,
    ref: torch.Tensor,
    tgt: torch.Tensor,
    *,
    ss_weight: float | None,
    cycle_weight: float | None,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """OneSeg's training loss for a batch of (previous, reference, target) slices.

    Args:
        net: The network.
        prev: Previous slices ``(B, 1, S, S)`` (for scheduled sampling).
        ref: Reference slices.
        tgt: Target slices.
        ss_weight: Probability of the true reference (``None``: no scheduled sampling).
        cycle_weight: Weight of the cycle loss (``None``: no cycle consistency).
        generator: Random generator for the scheduled-sampling draws.
        autocast_dtype: Mixed precision of the feature extractor (``None``: float32). The
            attention copies and the losses always run in float32: in bf16 the cosine
            similarities lose the fine differences between neighbouring pixels (trained so,
            LeftAtrium Dice from the largest slice fell from 0.83 to 0.78).

    Returns:
        Scalar loss.
    """
    b = ref.shape[0]
    with autocast(ref.device, autocast_dtype):
        feats = net(torch.cat([prev, ref, tgt]))
    f_prev, f_ref, f_tgt = feats[:b], feats[b : 2 * b], feats[2 * b :]
    stride = net.stride
    v_prev, v_ref, v_tgt = (F.avg_pool2d(x, stride) for x in (prev, ref, tgt))
    # First step of the chain (previous -> reference) is itself a training pair.
    ref_hat = net.copy(f_ref, f_prev, v_prev)
    first = F.smooth_l1_loss(ref_hat, v_ref, beta=0.05)
    values = v_ref
    if ss_weight is not None:
        keep = torch.rand(b, 1, 1, 1, generator=generator) < ss_weight
        values = torch.where(keep.to(ref.device), v_ref, ref_hat.detach())
    tgt_hat = net.copy(f_tgt, f_ref, values)
    forward = 0.5 * (first + F.smooth_l1_loss(tgt_hat, v_tgt, beta=0.05))
    if cycle_weight is None:
        return forward
    ref_back = net.copy(f_ref, f_tgt, tgt_hat)
    cycle = F.smooth_l1_loss(ref_back, v_ref, beta=0.05)
    return (1.0 - cycle_weight) * forward + cycle_weight * cycle


class _ReconstructionLoss(nn.Module):
    """The whole training loss as one ``forward``, so that data-parallel training averages the
    gradients of every parameter (the loss also calls ``net.copy``, not only ``net.forward``)."""

    def __init__(self, net: OneSegNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, prev: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor,
                **kwargs: Any) -> torch.Tensor:
        """:func:`reconstruction_loss` of the wrapped network."""
        return reconstruction_loss(self.net, prev, ref, tgt, **kwargs)


class OneSegTrainer(LoopTrainer):
    """Train a OneSeg network on unlabeled volumes.

    Under ``torchrun`` (``dist`` with several processes) every process draws its own samples
    (seeds ``seed + rank``) from the same initial weights, gradients are averaged by
    :class:`~torch.nn.parallel.DistributedDataParallel`, batch-norm statistics are copied from
    rank 0 after each step, each process screens a share of the volumes and all use the same
    pairs, and an epoch's steps are split across the processes (effective batch
    ``batch_size * world_size``).

    Args:
        volumes: Prepared volumes, each ``(N_i, 1, S, S)`` (see ``preprocess.volume_to_slices``).
        network: Network settings.
        config: Training settings.
        device: Where to train.
        dist: This process's place in a data-parallel run (default: the current process group,
            or a single process).
    """

    def __init__(
        self,
        volumes: list[torch.Tensor],
        *,
        network: NetworkConfig,
        config: TrainConfig,
        device: torch.device,
        dist: DistInfo | None = None,
    ) -> None:
        self.volumes = [v for v in volumes if len(v) >= 2]
        if not self.volumes:
            raise ValueError("training needs at least one volume with two or more slices")
        self.config = config
        self.network_config = network
        self.device = device
        self.dist = dist or distributed.current()
        torch.manual_seed(config.seed)
        sample_seed = config.seed + self.dist.rank
        self.rng = np.random.default_rng(sample_seed)
        self.generator = torch.Generator().manual_seed(sample_seed)
        self.net = OneSegNet(network).to(device)
        self.autocast_dtype = resolve_precision(config.precision, device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)
        steps = max(1, config.pairs_per_epoch // config.batch_size)
        self.steps_per_epoch = -(-steps // self.dist.world_size)
        # Progress (advanced by the training loop): the epoch under way (from 1), steps done in
        # it and in all, training seconds, and whether done; the epoch's training pairs (None
        # until screened) and their (previous, reference, target) triples.
        self.epoch = 1
        self.epoch_step = 0
        self.step = 0
        self.elapsed = 0.0
        self.finished = False
        self.pairs: list[list[tuple[int, int]]] | None = None
        self._triples: list[list[tuple[int, int, int]]] = []
        self._parallel: nn.Module | None = None

    # ------------------------------------------------------------------ training
    def screen(self) -> list[list[tuple[int, int]]]:
        """Training pairs of every volume for this epoch.

        With several processes each screens every ``world_size``-th volume and the pairs are
        exchanged, so all processes train on the same pairs.
        """
        cfg = self.config
        world, rank = self.dist.world_size, self.dist.rank
        all_pairs = []
        for idx, vol in enumerate(self.volumes):
            if idx % world != rank:
                continue
            if cfg.pairs == "random":
                pairs = random_pairs(len(vol), max(2, cfg.clusters), self.rng)
            else:
                self.net.eval()
                with autocast(self.device, self.autocast_dtype):
                    feats = self.net.embed_slices(vol.to(self.device))
                # K-means on 8 x 8 pooled maps: the full maps would make clustering slow.
                pooled = OneSegModel.pooled(feats, grid=8)
                reps = representative_set(pooled, clusters=cfg.clusters, seed=cfg.seed + idx)
                pairs = screened_pairs(reps)
                if not pairs:  # a single cluster: fall back to neighbours
                    pairs = random_pairs(len(vol), 2, self.rng, max_gap=1)
            for _ in range(cfg.local_chains):
                pairs = pairs + neighbour_chain(len(vol), self.rng, max_gap=cfg.local_gap)
            all_pairs.append(pairs)
        if world == 1:
            return all_pairs
        shares = distributed.all_gather_json(all_pairs)
        return [[tuple(p) for p in shares[idx % world][idx // world]]
                for idx in range(len(self.volumes))]

    def _sample_batch(
        self, triples: list[list[tuple[int, int, int]]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        usable = [i for i, t in enumerate(triples) if t]
        batch = []
        for _ in range(cfg.batch_size):
            v = usable[int(self.rng.integers(len(usable)))]
            prev, ref, tgt = triples[v][int(self.rng.integers(len(triples[v])))]
            vol = self.volumes[v]
            batch.append(torch.stack([vol[prev], vol[ref], vol[tgt]]))
        x = _augment(torch.stack(batch), self.rng).to(self.device)
        return x[:, 0], x[:, 1], x[:, 2]

    def _loss(self, prev: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor,
              ss_weight: float) -> torch.Tensor:
        cfg = self.config
        kwargs = {
            "ss_weight": ss_weight if cfg.scheduled_sampling else None,
            "cycle_weight": cfg.cycle_weight if cfg.cycle else None,
            "generator": self.generator,
            "autocast_dtype": self.autocast_dtype,
        }
        if self.dist.enabled:
            if self._parallel is None:
                self._parallel = distributed.data_parallel(
                    _ReconstructionLoss(self.net), self.device)
            return self._parallel(prev, ref, tgt, **kwargs)
        return reconstruction_loss(self.net, prev, ref, tgt, **kwargs)

    # ------------------------------------------------------------------ the loop's hooks
    def begin_epoch(self) -> None:
        """Screen the epoch's training pairs (unless a resumed run has them already)."""
        if self.pairs is None:
            self.pairs = self.screen()
        # Both directions of every chain: propagation runs both ways at test time.
        self._triples = [_triples(p) + _triples([(b, a) for a, b in reversed(p)])
                         for p in self.pairs]
        self.net.train()

    def fit_step(self, position: Position) -> dict[str, float]:
        """One optimisation step on a batch of the epoch's pairs."""
        cfg = self.config
        w = scheduled_weight(position.progress(position.steps_fraction), cfg.ss_start,
                             cfg.ss_end)
        prev, ref, tgt = self._sample_batch(self._triples)
        loss = self._loss(prev, ref, tgt, w)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        distributed.sync_buffers(self.net)
        return {"loss": loss.item(), "lr": self.optimizer.param_groups[0]["lr"], "ss_weight": w}

    def end_epoch(self, *, stopped: bool, clock: RunClock) -> None:
        """Halve the learning rate (not when the time limit ended the run); re-screen next."""
        if not stopped:
            self.scheduler.step()
        self.pairs = None

    def fit(self, callback: Callable[[TrainState], None] | None = None, *,
            checkpoint: RunCheckpoint | None = None) -> OneSegNet:
        """Run (or continue, after :meth:`restore`) training; returns the trained network.

        Args:
            callback: Called after every step with a :class:`TrainState`.
            checkpoint: Where and how often to save a resumable checkpoint (also saved at
                the end); ``None``: never.
        """
        report = None if callback is None else (
            lambda r: callback(TrainState.from_report(r)))
        self.run_epochs(epochs=self.config.epochs, max_time=self.config.max_time,
                        callback=report, checkpoint=checkpoint)
        self.net.eval()
        return self.net

    def record(self) -> dict:
        """Training settings for ``config.json`` (with the precision ``auto`` resolved to)."""
        return {**asdict(self.config), "precision_used": precision_name(self.autocast_dtype)}

    # ------------------------------------------------------------------ checkpoints
    def fingerprint(self) -> dict[str, Any]:
        """Settings and data a resumed run must share with the run it continues."""
        return {
            "training": asdict(self.config),
            "network": self.network_config.to_dict(),
            "data": digest(self.volumes),
            "architecture": architecture_digest(self.net),
            "world_size": self.dist.world_size,
        }

    def _run_meta(self) -> dict[str, Any]:
        pairs = None if self.pairs is None else [[list(p) for p in v] for v in self.pairs]
        return {"pairs": pairs, "scheduler": self.scheduler.state_dict()}

    def _run_tensors(self) -> dict[str, torch.Tensor]:
        return prefixed("net", self.net.state_dict())

    def upgrade_meta(self, meta: dict[str, Any], version: int) -> dict[str, Any]:
        """Format 1 counted the epochs done (from 0) where format 2 counts from 1."""
        if version == 1:
            meta["epoch"] = int(meta["epoch"]) + 1
        return meta

    def _restore_run(self, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        self.net.load_state_dict(unprefixed("net", tensors), strict=True)
        self.net.to(self.device)
        self.scheduler.load_state_dict(meta["scheduler"])
        pairs = meta["pairs"]
        self.pairs = None if pairs is None else [[tuple(p) for p in v] for v in pairs]
