"""LTUDA's training loop: partial-label baseline, stage 1 (CDA) and stage 2 (PDA).

* ``partial``: pBCE on the weak view only (DoDNet-like baseline). With a dataset that labels
  every organ this is plain full supervision.
* ``cda``: + mean teacher (EMA of weights and batch-norm statistics, decay ramped as
  ``min(0.999, (1 + step) / (10 + step))``, :mod:`sparseseg.ltuda.teacher`) and two strong
  CutMix views supervised by merged pseudo-labels and the mixed partial labels.
* Warm-up (``cda`` and ``ltuda``): for the first ``warmup_fraction`` (0.3) of the run, the
  partial loss alone (one U-Net pass a step instead of four; the teacher is still updated).
  Pseudo-labels of an untrained teacher say "background" for every unlabeled organ, which on
  a CPU budget suppresses hard organs (ACDC right ventricle) before they are learned.
* ``ltuda``: ``cda`` for the first ``stage1_fraction`` (0.5) of the run (epochs or time), then
  stage 2 continues from the stage-1 student and adds the projection head and the labeled- and
  unlabeled-prototype classifiers, all supervised by the merged pseudo-labels. At the switch,
  each class's prototypes are initialised by balanced (Sinkhorn) K-means on the embeddings of
  that class's pixels (merged pseudo-labels of a few batches), then updated by momentum as in
  the paper: random prototypes with momentum 0.999 never become usable within a CPU budget.
  Every stage-2 epoch validates all three classifiers; the best one is reported (and saved).
  The prototype losses and updates use at most ``proto_pixels`` random pixels of each class per
  strong view (all pixels with 0, as the paper): over every pixel they cost as much as a U-Net
  pass, which on a CPU budget halves the epochs stage 2 gets.
* Stage 2 costs 1.6-1.7 stage-1 steps a step (projection head, prototype losses and updates,
  three classifiers validated): in a 12-minute Cardiac run (``benchmarks/ltuda_diagnose.py``,
  docs/benchmarks.md, 2026-12-05) it took half of the budget for 13 of 44 epochs and lifted
  the teacher's test Dice by 0.007, where stage 1 had lifted it by 0.066 in 140 s. Giving
  stage 1 the time instead (``stage1_fraction=0.8``) did not raise the test Dice in two folds
  (-0.017, -0.001), so the default stays 0.5.
* ``pseudo_confidence`` (off by default): the strong views' pseudo-labels are supervised only
  where the teacher is sure of each unlabeled organ (:func:`sparseseg.ltuda.pseudo.confident_mask`).
  At 0.9 it changed nothing measurable in a four-fold Cardiac cross-validation (0.800 against
  0.801, docs/benchmarks.md, 2026-12-06).
* ``teacher_flip`` (off by default): the pseudo-labels come from the mean of the teacher's
  probabilities on the weak view and on its left-right mirror (mirrored back), one more
  teacher pass a step. In a four-fold Cardiac cross-validation it scored 0.758 against the
  partial baseline's 0.819 (behind in every fold; docs/benchmarks.md, 2026-12-06).
* ``exclusion`` (off by default): organs exclude each other, so on a labeled organ's pixels
  every other organ's channel is supervised as absent too, in the weak view's and the strong
  views' partial terms (:func:`sparseseg.ltuda.losses.with_exclusion`). On a Cardiac patient
  split it lowered the confusion (partial 0.052 -> 0.037, ltuda 0.074 -> 0.056) and the mean
  Dice (partial 0.757 -> 0.716, ltuda 0.703 -> 0.699; docs/benchmarks.md, 2026-12-07).
* ``weak_view_loss`` (on by default, the paper): with it off, ``cda`` and ``ltuda`` steps after
  the warm-up skip the student's pass over the weak view (its partial loss); the strong views'
  mixed partial labels still supervise every labeled pixel they hold. A step then costs two
  U-Net passes and one backward instead of three passes and two backwards, so on a CPU budget
  the method trains more steps. With ``warmup_fraction=0.5`` and method ``cda`` it was
  +0.019 over ``partial`` in a paired four-fold Cardiac cross-validation (sd 0.024), and
  -0.039 on another patient split (behind in all four folds; docs/benchmarks.md,
  2026-12-06): no reliable gain. Alone, with ``ltuda``'s defaults, +0.003.
* ``cda`` and ``ltuda`` also validate the mean teacher (its linear classifier) each epoch: an
  EMA of the weights often segments better than the student it averages, and when it validates
  best its weights are the ones saved.

Optimiser: SGD (lr 1e-3, momentum 0.99, Nesterov, poly 0.9) as in the paper, or Adam (lr 1e-3,
poly 0.9), which learns much faster within the few CPU minutes of a benchmark and is the
default here. The poly schedule follows the fraction of the run done (epochs or time).

Loss: the paper's per-channel partial BCE; ``dice=True`` adds a partial soft Dice term on the same
known pixels to every supervised term, which learns small structures much faster on a CPU budget.

The epochs, the time limit, checkpoints and progress reports are the shared training loop's
(:mod:`sparseseg.training_loop`); this module supplies the steps and the end of an epoch
(validation, :mod:`sparseseg.ltuda.evaluate`; the best epoch, :mod:`sparseseg.ltuda.selection`).
Runs can be saved and continued at any step (:meth:`Trainer.state`, :meth:`Trainer.restore`,
:mod:`sparseseg.runstate`) and trained data-parallel under ``torchrun``
(:mod:`sparseseg.distributed`).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sparseseg import distributed
from sparseseg.distributed import DistInfo
from sparseseg.ltuda.augment import (
    apply_affine,
    apply_cutmix,
    apply_intensity,
    apply_tone,
    cutmix_params,
    intensity_params,
    tone_params,
    weak_params,
)
from sparseseg.ltuda.classify import organs_to_classes
from sparseseg.ltuda.data import SliceCase, SliceSampler
from sparseseg.ltuda.evaluate import mean_score, validate, validate_all
from sparseseg.ltuda.losses import supervised_loss, with_exclusion
from sparseseg.ltuda.model import CLASSIFIERS, LTUDAModel
from sparseseg.ltuda.prototypes import prototype_loss
from sparseseg.ltuda.pseudo import confident_mask, merge_pseudo_labels
from sparseseg.ltuda.selection import BestModelKeeper, best_classifier
from sparseseg.ltuda.teacher import ema_decay, update_teacher
from sparseseg.precision import autocast, resolve_precision
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

METHODS = ("partial", "cda", "ltuda")

TEACHER = "teacher"
"""Name of the mean teacher's linear classifier among the validated classifiers."""


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (the defaults follow the paper unless noted)."""

    method: str = "ltuda"
    epochs: int = 100
    max_time: float | None = None  # minutes
    batch_size: int = 4
    optimizer: str = "adam"
    lr: float = 1e-3
    ema: float = 0.999
    n_strong: int = 2
    proto_pixels: int = 2048  # per class and strong view; 0: every pixel (the paper)
    stage1_fraction: float = 0.5  # of the run (epochs or time) before stage 2
    warmup_fraction: float = 0.3
    seed: int = 0
    dice: bool = False
    precision: str = "auto"  # fp32, bf16 or auto (sparseseg.precision)
    tone: bool = True  # gamma/contrast in the weak view (not the paper's; augment.tone_params)
    pseudo_confidence: float = 0.0  # 0: every pseudo-label pixel supervised (pseudo.confident_mask)
    weak_view_loss: bool = True  # False: after the warm-up, no student pass on the weak view
    teacher_flip: bool = False  # pseudo-labels from the teacher's mean over the view and its mirror
    exclusion: bool = False  # a labeled organ's pixels also teach the other channels "absent"
    extra: dict = field(default_factory=dict)


def sample_per_class(targets: torch.Tensor, per_class: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``per_class`` random items of each class (sorted).

    Args:
        targets: ``(N,)`` class of each item.
        per_class: Largest number kept per class.
        generator: CPU random generator (the draw is reproducible and resumable).

    Example:
        >>> t = torch.tensor([0] * 100 + [1] * 3)
        >>> keep = sample_per_class(t, 10, torch.Generator().manual_seed(0))
        >>> int((t[keep] == 0).sum()), int((t[keep] == 1).sum())
        (10, 3)
    """
    keep = []
    for c in targets.unique().tolist():
        index = (targets == c).nonzero().squeeze(1)
        if index.numel() > per_class:
            pick = torch.randperm(index.numel(), generator=generator)[:per_class]
            index = index[pick.to(index.device)]
        keep.append(index)
    return torch.cat(keep).sort().values


@dataclass
class EpochResult:
    """What an epoch of :meth:`Trainer.fit` reports to ``on_epoch`` (rank 0 only).

    Attributes:
        epoch: The epoch (from 1).
        stage: 1 or 2.
        lr: The learning rate of its last step.
        losses: Mean of each loss term over its steps (``total``, ``sup``, ``cda``, ``proto``).
        val: Dice per organ of the best-validating classifier (NaN: no validation case
            labels the organ).
        classifier: That classifier: ``linear`` in stage 1; in stage 2 the best of linear,
            labeled and unlabeled; :data:`TEACHER` when the mean teacher validates best (see
            :meth:`Trainer.model_state`).
        val_by_classifier: Mean Dice of each classifier validated (``-inf``: none scored).
        elapsed: Training seconds at the end of the epoch's validation.
        best: The epoch validated best of the run so far: its weights are the ones to save
            (:class:`~sparseseg.ltuda.selection.BestModelKeeper`).
    """

    epoch: int
    stage: int
    lr: float
    losses: dict[str, float]
    val: np.ndarray
    classifier: str
    val_by_classifier: dict[str, float]
    elapsed: float
    best: bool = False

    @property
    def score(self) -> float:
        """Mean validation Dice over the organs scored (``-inf`` when none is)."""
        return mean_score(self.val)

    def to_json(self) -> dict[str, Any]:
        """JSON form (non-finite numbers as ``None``), without :attr:`best`."""
        return {"epoch": self.epoch, "stage": self.stage, "lr": self.lr,
                "losses": dict(self.losses), "val": [_finite(v) for v in self.val],
                "classifier": self.classifier,
                "val_by_classifier": {c: _finite(v) for c, v in self.val_by_classifier.items()},
                "elapsed": self.elapsed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpochResult:
        """Inverse of :meth:`to_json`."""
        return cls(epoch=int(data["epoch"]), stage=int(data["stage"]), lr=float(data["lr"]),
                   losses={str(k): float(v) for k, v in data["losses"].items()},
                   val=np.array([math.nan if v is None else float(v) for v in data["val"]]),
                   classifier=str(data["classifier"]),
                   val_by_classifier={str(c): _score(v)
                                      for c, v in data["val_by_classifier"].items()},
                   elapsed=float(data["elapsed"]))


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _score(value: float | None) -> float:
    return -math.inf if value is None or not math.isfinite(float(value)) else float(value)


def _upgrade_record(record: Mapping[str, Any]) -> tuple[list[dict], dict]:
    """``history`` and ``best`` from a format-1 checkpoint's ``record`` (the log rows the
    model-folder writer kept there, keyed ``loss_*``, ``val_dice_<organ>``,
    ``val_mean_<classifier>``)."""
    history = []
    for row in record.get("history", []):
        history.append({
            "epoch": row["epoch"], "stage": row["stage"], "lr": row["lr"],
            "losses": {k[5:]: v for k, v in row.items() if k.startswith("loss_")},
            "val": [v for k, v in row.items()
                    if k.startswith("val_dice_") and k != "val_dice_mean"],
            "classifier": row["classifier"],
            "val_by_classifier": {k[9:]: v for k, v in row.items()
                                  if k.startswith("val_mean_")},
            "elapsed": row["elapsed_s"]})
    return history, dict(record.get("best", {"score": -math.inf}))


class _StepLoss(nn.Module):
    """One training step's loss as a single ``forward``.

    Data-parallel training averages the gradients of the parameters of the wrapped module
    used inside its ``forward``; LTUDA's loss runs the U-Net several times and the projection
    head outside ``LTUDAModel.forward``, so the whole loss is computed here. ``parts`` are the
    modules trained in the current stage (the projection head only in stage 2).
    """

    def __init__(self, trainer: Trainer, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self._loss = trainer.loss

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                m: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``Trainer.loss`` of a batch."""
        return self._loss(x, y, m)


class Trainer(LoopTrainer):
    """Trains an LTUDA model; :meth:`fit` reports each epoch's validation to ``on_epoch``.

    Under ``torchrun`` (``dist`` with several processes) every process draws its own batches
    (seeds ``seed + rank``), gradients are averaged by
    :class:`~torch.nn.parallel.DistributedDataParallel`, buffers (batch-norm statistics,
    prototypes) are copied from rank 0 after each step so the student, the teacher and the
    prototypes stay identical everywhere, an epoch's steps are split across the processes,
    and rank 0 alone validates and calls ``on_epoch``.

    Args:
        model: The model to train (its prototype branch is used in stage 2 only).
        train_cases: Training slices.
        val_cases: Validation cases (partial labels of the training data); without any, the
            last epoch is the one kept.
        config: Hyper-parameters.
        device: Compute device.
        dist: This process's place in a data-parallel run (default: the current process
            group, or a single process).
    """

    def __init__(self, model: LTUDAModel, train_cases: list[SliceCase],
                 val_cases: list[SliceCase], config: TrainConfig, device: torch.device,
                 dist: DistInfo | None = None):
        if config.method not in METHODS:
            raise ValueError(f"unknown method {config.method!r}; use one of {METHODS}")
        self.model = model.to(device)
        self.config = config
        self.device = device
        self.dist = dist or distributed.current()
        self.train_cases = train_cases
        self.val_cases = val_cases
        sample_seed = config.seed + self.dist.rank
        self.rng = np.random.default_rng(sample_seed)
        self.generator = torch.Generator().manual_seed(sample_seed)
        self.sampler = SliceSampler(train_cases, config.batch_size, self.rng)
        self.autocast_dtype = resolve_precision(config.precision, device)
        self.teacher: nn.Module | None = None
        if config.method != "partial":
            self.teacher = copy.deepcopy(self.model.unet).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.stage = 1
        self.progress = 0.0
        """Fraction of the run done (epochs or time), set by :meth:`fit` before each step."""
        self.optimizer = self._make_optimizer(stage=1)
        self.steps_per_epoch = -(-len(self.sampler) // self.dist.world_size)
        # Progress (advanced by the training loop): the epoch under way (from 1), steps done
        # in it and in all, training seconds, and whether the run is over; the epoch's summed
        # losses and the last learning rate.
        self.epoch = 1
        self.epoch_step = 0
        self.step = 0
        self.elapsed = 0.0
        self.finished = False
        self.sums: dict[str, float] = {}
        self.lr = config.lr
        self.history: list[EpochResult] = []
        """Each validated epoch's result (rank 0)."""
        self.best = BestModelKeeper(keep_last=not val_cases)
        """The best-validating epoch so far (rank 0)."""
        self._parallel: nn.Module | None = None
        self._parallel_stage = 0

    def _make_optimizer(self, stage: int) -> torch.optim.Optimizer:
        params = list(self.model.unet.parameters())
        if stage == 2:
            params += list(self.model.projection.parameters())
        s = self.config
        if s.optimizer == "sgd":
            return torch.optim.SGD(params, lr=s.lr, momentum=0.99, nesterov=True,
                                   weight_decay=3e-5)
        if s.optimizer == "adam":
            return torch.optim.Adam(params, lr=s.lr, weight_decay=3e-5)
        raise ValueError(f"unknown optimizer {s.optimizer!r}; use sgd or adam")

    def _update_teacher(self) -> None:
        """EMA of the student's weights and batch-norm statistics (:mod:`.teacher`), with the
        decay of the step under way (``step`` counts the steps before it)."""
        update_teacher(self.teacher, self.model.unet, ema_decay(self.step, self.config.ema))

    def _forward(self, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A U-Net pass under the run's precision; logits and features back in float32."""
        with autocast(self.device, self.autocast_dtype):
            logits, features = net(x)
        return logits.float(), features.float()

    def loss(self, x: torch.Tensor, y: torch.Tensor,
             m: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of a batch and its terms (stage 2 also moves the prototypes)."""
        model, g = self.model, self.generator
        xw, yw = self.weak_view(x, y)
        model.train()
        dice = self.config.dice
        mixing = self.config.method != "partial" and not self.warming_up()
        if mixing and not self.config.weak_view_loss:
            loss = xw.new_zeros(())  # the strong views alone (their mixed partial labels too)
            terms = {"sup": 0.0}
        else:
            logits_w, _ = self._forward(model, xw)
            loss = supervised_loss(logits_w, yw, self._known(yw, m), dice=dice)
            terms = {"sup": loss.item()}
        if self.config.method != "partial" and not mixing:
            terms["cda"] = 0.0
        elif mixing:
            with torch.no_grad():
                teacher_logits, _ = self._forward(self.teacher, xw)
                teacher_probs = torch.sigmoid(teacher_logits)
                if self.config.teacher_flip:  # test-time augmentation of the teacher
                    mirrored, _ = self._forward(self.teacher, xw.flip(-1))
                    teacher_probs = 0.5 * (teacher_probs + torch.sigmoid(mirrored).flip(-1))
                pseudo = merge_pseudo_labels(teacher_probs, yw, m)
                trust = confident_mask(teacher_probs, yw, m, self.config.pseudo_confidence)
            loss_cda = loss.new_zeros(())
            loss_proto = loss.new_zeros(())
            for _ in range(self.config.n_strong):
                xs = apply_intensity(intensity_params(x.shape[0], g), xw, g)
                params = cutmix_params(x.shape[0], *x.shape[-2:], generator=g)
                xs, ps, ts, ys, ms = apply_cutmix(params, xs, pseudo, trust, yw, m)
                logits_s, features = self._forward(model, xs)
                loss_cda = loss_cda + supervised_loss(logits_s, ps, ts, dice=dice)
                loss_cda = loss_cda + supervised_loss(logits_s, ys, self._known(ys, ms),
                                                      dice=dice)
                if self.stage == 2:
                    loss_proto = loss_proto + self._prototype_step(features, ps, ms)
            loss = loss + loss_cda + loss_proto
            terms["cda"] = loss_cda.item()
            if self.stage == 2:
                terms["proto"] = loss_proto.item()
        return loss, terms

    def _known(self, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """The known pixels of the partial labels ``y`` (``m`` itself, or with
        ``config.exclusion`` also the other channels on labeled organs' pixels)."""
        return with_exclusion(y, m) if self.config.exclusion else m

    def weak_view(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weak view of a batch: affine warp, then (``config.tone``) gamma/contrast."""
        g = self.generator
        xw, yw = apply_affine(weak_params(x.shape[0], generator=g), x, y)
        if self.config.tone:
            xw = apply_tone(tone_params(x.shape[0], generator=g), xw)
        return xw, yw

    def warming_up(self) -> bool:
        """Whether the step under way is in the warm-up (partial labels only, no teacher).

        For the first ``warmup_fraction`` of the run, ``cda`` and ``ltuda`` train like
        ``partial``: each step costs one U-Net pass instead of four, and the teacher (still
        updated every step) only starts to supervise once it segments something.
        """
        return self.stage == 1 and self.progress < self.config.warmup_fraction

    def train_step(self) -> dict[str, float]:
        """One optimisation step outside :meth:`fit` (counted in ``step``); its loss terms.

        Uses the run's ``progress`` and ``stage`` as they are (tests and benchmarks set them).
        """
        terms = self._optimise()
        self.step += 1
        return terms

    def _optimise(self) -> dict[str, float]:
        """One optimisation step and the teacher's update; returns its loss terms."""
        x, y, m = (t.to(self.device) for t in self.sampler.batch())
        if self.dist.enabled:
            if self._parallel is None or self._parallel_stage != self.stage:
                parts = [self.model.unet] + ([self.model.projection] if self.stage == 2 else [])
                self._parallel = distributed.data_parallel(_StepLoss(self, parts), self.device)
                self._parallel_stage = self.stage
            loss, terms = self._parallel(x, y, m)
        else:
            loss, terms = self.loss(x, y, m)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        distributed.sync_buffers(self.model)
        if self.teacher is not None:
            self._update_teacher()
        terms["total"] = loss.item()
        return terms

    def _prototype_step(self, features: torch.Tensor, pseudo: torch.Tensor,
                        labeled: torch.Tensor) -> torch.Tensor:
        """Prototype losses of both classifiers, then their momentum updates.

        A pixel counts as "labeled" when its pseudo-label is an organ whose ground truth its
        (mixed) sample holds, "unlabeled" when the organ came from the teacher; background
        pixels feed both classifiers' background prototypes. With ``proto_pixels`` > 0 the
        losses and updates use at most that many random pixels of each class per view
        (:func:`sample_per_class`), which keeps stage 2 about as cheap as stage 1 on a CPU.
        """
        model = self.model
        emb = model.projection(features)
        d = emb.shape[1]
        target = organs_to_classes(pseudo)  # (B, H, W)
        from_gt = (labeled * pseudo).amax(dim=1) > 0.5
        organ = target > 0
        flat_emb = emb.permute(0, 2, 3, 1).reshape(-1, d)
        flat_t = target.reshape(-1)
        sources = [(model.proto_labeled, (~organ | from_gt).reshape(-1)),
                   (model.proto_unlabeled, (~organ | ~from_gt).reshape(-1))]
        if self.config.proto_pixels > 0:
            keep = sample_per_class(flat_t, self.config.proto_pixels, self.generator)
            flat_emb, flat_t = flat_emb[keep], flat_t[keep]
            sources = [(clf, own[keep]) for clf, own in sources]
        total = emb.new_zeros(())
        for clf, own in sources:
            flat_sims = clf.similarities(flat_emb)
            assignment = clf.assign(flat_emb.detach(), flat_t)
            total = total + prototype_loss(flat_sims, flat_t, assignment)
            correct = (flat_sims.detach().amax(dim=2).argmax(1) == flat_t) & own
            clf.update(flat_emb.detach()[correct], flat_t[correct], assignment[correct])
        return total

    def validate_teacher(self) -> np.ndarray:
        """:func:`validate` of the mean teacher's linear classifier."""
        student = self.model.unet
        try:
            self.model.unet = self.teacher
            return validate(self.model, self.val_cases, "linear", self.device)
        finally:
            self.model.unet = student

    def model_state(self, classifier: str) -> dict[str, torch.Tensor]:
        """The weights to save when ``classifier`` validates best.

        The model's own state, except for :data:`TEACHER`: the mean teacher's U-Net with the
        student's (unused) prototype branch, to be used with the linear classifier.
        """
        state = self.model.state_dict()
        if classifier == TEACHER:
            state.update(prefixed("unet", self.teacher.state_dict()))
        return state

    def set_lr(self, progress: float) -> float:
        """Poly decay (power 0.9) over the run's progress in [0, 1]."""
        lr = self.config.lr * (1 - min(max(progress, 0.0), 0.999)) ** 0.9
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def start_stage2(self) -> None:
        """Switch to stage 2, continuing from the current (stage-1) student.

        The projection head joins the existing optimiser (its state for the U-Net is kept, so
        the stage-1 weights are not kicked by a fresh Adam), and both prototype classifiers are
        initialised from the embeddings of pixels of each class (:meth:`init_prototypes`).
        """
        self.stage = 2
        group = dict(self.optimizer.param_groups[0])
        group["params"] = list(self.model.projection.parameters())
        self.optimizer.add_param_group(group)
        self.init_prototypes()
        distributed.sync_buffers(self.model)  # each process initialised from its own batches
        log.info("stage 2 (prototype alignment) from step %d", self.step)

    @torch.no_grad()
    def init_prototypes(self, n_batches: int | None = None) -> None:
        """Initialise each class's prototypes from projected features of that class's pixels.

        Takes ``n_batches`` training batches (weak views), labels their pixels with the merged
        pseudo-labels (teacher on the weak view + partial ground truth), and runs balanced
        spherical K-means per class (:meth:`PrototypeClassifier.initialize`): the labeled
        classifier from background and ground-truth organ pixels, the unlabeled one from
        background and teacher-labeled organ pixels (falling back to all pixels of a class
        that has none of its own kind).
        """
        model, dev = self.model, self.device
        n_batches = n_batches or int(self.config.extra.get("proto_init_batches", 8))
        model.train()  # the same normalisation as the stage-2 steps (warms the head's BN)
        embs, targets, gts = [], [], []
        for _ in range(n_batches):
            x, y, m = (t.to(dev) for t in self.sampler.batch())
            xw, yw = self.weak_view(x, y)
            teacher = self.teacher if self.teacher is not None else model.unet
            pseudo = merge_pseudo_labels(torch.sigmoid(teacher(xw)[0]), yw, m)
            _, features = model(xw)
            emb = model.projection(features)
            mask = m[:, :, None, None].expand_as(pseudo) if m.ndim == 2 else m
            embs.append(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]))
            targets.append(organs_to_classes(pseudo).reshape(-1))
            gts.append(((mask * pseudo).amax(dim=1) > 0.5).reshape(-1))
        emb, target, from_gt = torch.cat(embs), torch.cat(targets), torch.cat(gts)
        organ = target > 0
        for clf, own in ((model.proto_labeled, ~organ | from_gt),
                         (model.proto_unlabeled, ~organ | ~from_gt)):
            use = own.clone()
            for c in target.unique().tolist():
                cls = target == c
                if not (cls & own).any():
                    use |= cls
            done = clf.initialize(emb[use], target[use], generator=self.generator)
            log.info("prototypes initialised for classes %s", done)

    # ------------------------------------------------------------------ the loop's hooks
    def fit_step(self, position: Position) -> dict[str, float]:
        """Schedule (stage 2, learning rate) for the run's progress, then one step."""
        c = self.config
        progress = position.progress(position.epochs_fraction)
        self.progress = progress
        if (c.method == "ltuda" and self.stage == 1
                and progress >= max(c.stage1_fraction, c.warmup_fraction)):
            self.start_stage2()
        self.lr = self.set_lr(progress)
        terms = self._optimise()
        for key, v in terms.items():
            self.sums[key] = self.sums.get(key, 0.0) + v
        return terms

    def end_epoch(self, *, stopped: bool, clock: RunClock) -> EpochResult | None:
        """Validate (rank 0) and offer the epoch to :attr:`best`; ``None`` on other ranks."""
        n = max(self.epoch_step, 1)
        losses = {k: v / n for k, v in self.sums.items()}
        self.sums = {}
        if not self.dist.is_main:
            return None
        classifiers = CLASSIFIERS if self.stage == 2 else ("linear",)
        vals = validate_all(self.model, self.val_cases, classifiers, self.device)
        if self.teacher is not None:
            vals[TEACHER] = self.validate_teacher()
            classifiers = (*classifiers, TEACHER)
        # Ties go to the first of linear, labeled, unlabeled; without any score, the paper's
        # test-time choice (unlabeled in stage 2).
        classifier = best_classifier(vals, classifiers,
                                     fallback="unlabeled" if self.stage == 2 else "linear")
        val = vals[classifier]
        result = EpochResult(
            epoch=self.epoch, stage=self.stage, lr=self.lr, losses=losses, val=val,
            classifier=classifier, val_by_classifier={c: mean_score(v) for c, v in vals.items()},
            elapsed=clock.local(), best=self.best.offer(self.epoch, mean_score(val), classifier))
        self.history.append(result)
        return result

    def fit(self, callback: Callable[[StepReport], None] | None = None, *,
            on_epoch: Callable[[EpochResult], None] | None = None,
            checkpoint: RunCheckpoint | None = None) -> None:
        """Train until the epochs or the time budget run out (or continue a run).

        Continues where a :meth:`restore`-d state left off. With several processes only rank
        0 validates and calls ``on_epoch``.

        Args:
            callback: Called after each step with a
                :class:`~sparseseg.training_loop.StepReport` (its ``values``: the loss terms
                ``total``, ``sup``, ``cda`` and in stage 2 ``proto``).
            on_epoch: Called after each epoch's validation with its :class:`EpochResult`;
                when ``result.best``, its weights (:meth:`model_state`) are the ones to save.
            checkpoint: Where and how often to save a resumable checkpoint (also saved at
                the end); ``None``: never.
        """
        self.run_epochs(epochs=self.config.epochs, max_time=self.config.max_time,
                        callback=callback, on_epoch=on_epoch, checkpoint=checkpoint)

    # ------------------------------------------------------------------ checkpoints
    def fingerprint(self) -> dict[str, Any]:
        """Settings and data a resumed run must share with the run it continues."""
        return {
            "training": asdict(self.config),
            "architecture": architecture_digest(self.model),
            "train_data": digest([x for c in self.train_cases for x in
                                  (c.name, str(c.dataset), c.image, c.target, c.labeled)]),
            "val_data": digest([x for c in self.val_cases for x in
                                (c.name, str(c.dataset), c.image, c.target, c.labeled)]),
            "world_size": self.dist.world_size,
        }

    def _run_meta(self) -> dict[str, Any]:
        return {"stage": self.stage, "sums": self.sums, "lr": self.lr,
                "history": [r.to_json() for r in self.history],
                "best": self.best.state_dict()}

    def _run_tensors(self) -> dict[str, torch.Tensor]:
        tensors = prefixed("model", self.model.state_dict())
        if self.teacher is not None:
            tensors.update(prefixed("teacher", self.teacher.state_dict()))
        return tensors

    def upgrade_meta(self, meta: dict[str, Any], version: int) -> dict[str, Any]:
        """Format 1 kept the history and the best epoch in the caller's ``record``."""
        if version == 1:
            meta["history"], meta["best"] = _upgrade_record(meta.pop("record"))
        return meta

    def _restore_run(self, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(unprefixed("model", tensors), strict=True)
        if self.teacher is not None:
            self.teacher.load_state_dict(unprefixed("teacher", tensors), strict=True)
        self.model.to(self.device)
        self.stage = int(meta["stage"])
        # The optimiser's parameter groups as they were: the projection head joins in stage 2.
        self.optimizer = self._make_optimizer(stage=1)
        if self.stage == 2:
            group = dict(self.optimizer.param_groups[0])
            group["params"] = list(self.model.projection.parameters())
            self.optimizer.add_param_group(group)
        self.sums = {str(k): float(v) for k, v in meta["sums"].items()}
        self.lr = float(meta["lr"])
        self.history = [EpochResult.from_json(r) for r in meta["history"]]
        self.best.load_state_dict(meta["best"])


def __getattr__(name: str) -> Any:
    if name == "TrainSettings":  # the former name of TrainConfig, for scripts that use it
        warnings.warn("sparseseg.ltuda.trainer.TrainSettings is now TrainConfig",
                      DeprecationWarning, stacklevel=2)
        return TrainConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
