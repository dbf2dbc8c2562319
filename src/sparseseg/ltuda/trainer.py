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
* ``ltuda``: ``cda`` for the first ``stage1_fraction`` of the run (epochs or time), then stage 2
  continues from the stage-1 student and adds the projection head and the labeled- and
  unlabeled-prototype classifiers, all supervised by the merged pseudo-labels. At the switch,
  each class's prototypes are initialised by balanced (Sinkhorn) K-means on the embeddings of
  that class's pixels (merged pseudo-labels of a few batches), then updated by momentum as in
  the paper: random prototypes with momentum 0.999 never become usable within a CPU budget.
  Every stage-2 epoch validates all three classifiers; the best one is reported (and saved).
  The prototype losses and updates use at most ``proto_pixels`` random pixels of each class per
  strong view (all pixels with 0, as the paper): over every pixel they cost as much as a U-Net
  pass, which on a CPU budget halves the epochs stage 2 gets.
* ``cda`` and ``ltuda`` also validate the mean teacher (its linear classifier) each epoch: an
  EMA of the weights often segments better than the student it averages, and when it validates
  best its weights are the ones saved.

Optimiser: SGD (lr 1e-3, momentum 0.99, Nesterov, poly 0.9) as in the paper, or Adam (lr 1e-3,
poly 0.9), which learns much faster within the few CPU minutes of a benchmark and is the
default here. The poly schedule follows the fraction of the run done (epochs or time).

Loss: the paper's per-channel partial BCE; ``dice=True`` adds a partial soft Dice term on the same
known pixels to every supervised term, which learns small structures much faster on a CPU budget.

Runs can be saved and continued at any step (:meth:`Trainer.state`, :meth:`Trainer.restore`,
:mod:`sparseseg.runstate`) and trained data-parallel under ``torchrun``
(:mod:`sparseseg.distributed`).
"""

from __future__ import annotations

import copy
import logging
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
from sparseseg.ltuda.losses import supervised_loss
from sparseseg.ltuda.model import CLASSIFIERS, LTUDAModel
from sparseseg.ltuda.prototypes import prototype_loss
from sparseseg.ltuda.pseudo import merge_pseudo_labels
from sparseseg.ltuda.teacher import ema_decay, update_teacher
from sparseseg.precision import autocast, resolve_precision
from sparseseg.runstate import (
    ResumableTrainer,
    RunCheckpoint,
    RunClock,
    architecture_digest,
    digest,
    prefixed,
    unprefixed,
)

log = logging.getLogger(__name__)

METHODS = ("partial", "cda", "ltuda")

TEACHER = "teacher"
"""Name of the mean teacher's linear classifier among the validated classifiers."""


@dataclass
class TrainSettings:
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
    stage1_fraction: float = 0.5
    warmup_fraction: float = 0.3
    seed: int = 0
    dice: bool = False
    precision: str = "auto"  # fp32, bf16 or auto (sparseseg.precision)
    tone: bool = True  # gamma/contrast in the weak view (not the paper's; augment.tone_params)
    extra: dict = field(default_factory=dict)


def dice_per_organ(pred: np.ndarray, target: np.ndarray, labeled: np.ndarray) -> list[float]:
    """3D Dice of each labeled organ (NaN for unlabeled ones, 1 when both are empty).

    Args:
        pred: ``(S, H, W)`` class map (organ k at k).
        target: ``(S, organs, H, W)`` organ masks.
        labeled: ``(organs,)`` bool.
    """
    out = []
    for k in range(target.shape[1]):
        if not labeled[k]:
            out.append(float("nan"))
            continue
        p, t = pred == k + 1, target[:, k] > 0
        denom = p.sum() + t.sum()
        out.append(1.0 if denom == 0 else float(2 * (p & t).sum() / denom))
    return out


@torch.no_grad()
def predict_slices(model: LTUDAModel, image: np.ndarray, classifier: str,
                   device: torch.device, batch: int = 16) -> torch.Tensor:
    """Class scores ``(S, organs + 1, H, W)`` (on CPU) for ``(S, H, W)`` normalised slices."""
    model.eval()
    out = []
    for i in range(0, image.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(image[i:i + batch]))[:, None].float()
        out.append(model.class_scores(x.to(device), classifier).cpu())
    return torch.cat(out)


def validate(model: LTUDAModel, cases: list[SliceCase], classifier: str,
             device: torch.device) -> np.ndarray:
    """Mean Dice per organ over the validation cases that label it (NaN if none)."""
    return validate_all(model, cases, (classifier,), device)[classifier]


@torch.no_grad()
def validate_all(model: LTUDAModel, cases: list[SliceCase], classifiers: tuple[str, ...],
                 device: torch.device, batch: int = 16) -> dict[str, np.ndarray]:
    """:func:`validate` of several classifiers, sharing one U-Net pass per batch."""
    n = model.n_organs
    model.eval()
    scores = {c: [[] for _ in range(n)] for c in classifiers}
    for case in cases:
        preds: dict[str, list[np.ndarray]] = {c: [] for c in classifiers}
        for i in range(0, case.image.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(case.image[i:i + batch]))[:, None]
            out = model.all_class_scores(x.float().to(device), classifiers)
            for c in classifiers:
                preds[c].append(out[c].argmax(1).cpu().numpy())
        for c in classifiers:
            pred = np.concatenate(preds[c])
            for k, d in enumerate(dice_per_organ(pred, case.target, case.labeled)):
                if d == d:
                    scores[c][k].append(d)
    return {c: np.array([np.mean(v) if v else np.nan for v in scores[c]])
            for c in classifiers}


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


def mean_score(val: np.ndarray) -> float:
    """Mean Dice over the organs that have a score (``-inf`` when none has)."""
    finite = val[np.isfinite(val)]
    return float(finite.mean()) if finite.size else -np.inf


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


class Trainer(ResumableTrainer):
    """Runs the training loop and reports each epoch through ``on_epoch``.

    Under ``torchrun`` (``dist`` with several processes) every process draws its own batches
    (seeds ``seed + rank``), gradients are averaged by
    :class:`~torch.nn.parallel.DistributedDataParallel`, buffers (batch-norm statistics,
    prototypes) are copied from rank 0 after each step so the student, the teacher and the
    prototypes stay identical everywhere, an epoch's steps are split across the processes,
    and rank 0 alone validates and calls ``on_epoch``.

    Args:
        model: The model to train (its prototype branch is used in stage 2 only).
        train_cases: Training slices.
        val_cases: Validation cases (partial labels of the training data).
        settings: Hyper-parameters.
        device: Compute device.
        dist: This process's place in a data-parallel run (default: the current process
            group, or a single process).
    """

    def __init__(self, model: LTUDAModel, train_cases: list[SliceCase],
                 val_cases: list[SliceCase], settings: TrainSettings, device: torch.device,
                 dist: DistInfo | None = None):
        if settings.method not in METHODS:
            raise ValueError(f"unknown method {settings.method!r}; use one of {METHODS}")
        self.model = model.to(device)
        self.settings = settings
        self.device = device
        self.dist = dist or distributed.current()
        self.train_cases = train_cases
        self.val_cases = val_cases
        sample_seed = settings.seed + self.dist.rank
        self.rng = np.random.default_rng(sample_seed)
        self.generator = torch.Generator().manual_seed(sample_seed)
        self.sampler = SliceSampler(train_cases, settings.batch_size, self.rng)
        self.autocast_dtype = resolve_precision(settings.precision, device)
        self.teacher: nn.Module | None = None
        if settings.method != "partial":
            self.teacher = copy.deepcopy(self.model.unet).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.step = 0
        self.stage = 1
        self.progress = 0.0
        """Fraction of the run done (epochs or time), set by :meth:`run` before each step."""
        self.optimizer = self._make_optimizer(stage=1)
        self.steps_per_epoch = -(-len(self.sampler) // self.dist.world_size)
        # Progress of run(): the epoch under way (1-based), steps done in it, its summed
        # losses, the last learning rate, training seconds, and whether the run is over.
        self.epoch = 1
        self.epoch_step = 0
        self.sums: dict[str, float] = {}
        self.lr = settings.lr
        self.elapsed = 0.0
        self.finished = False
        self.record: dict[str, Any] = {}
        """JSON bookkeeping of the caller (history, best epoch), saved in checkpoints."""
        self._parallel: nn.Module | None = None
        self._parallel_stage = 0

    def _make_optimizer(self, stage: int) -> torch.optim.Optimizer:
        params = list(self.model.unet.parameters())
        if stage == 2:
            params += list(self.model.projection.parameters())
        s = self.settings
        if s.optimizer == "sgd":
            return torch.optim.SGD(params, lr=s.lr, momentum=0.99, nesterov=True,
                                   weight_decay=3e-5)
        if s.optimizer == "adam":
            return torch.optim.Adam(params, lr=s.lr, weight_decay=3e-5)
        raise ValueError(f"unknown optimizer {s.optimizer!r}; use sgd or adam")

    def _update_teacher(self) -> None:
        """EMA of the student's weights and batch-norm statistics (:mod:`.teacher`)."""
        update_teacher(self.teacher, self.model.unet, ema_decay(self.step - 1, self.settings.ema))

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
        logits_w, _ = self._forward(model, xw)
        dice = self.settings.dice
        loss_sup = supervised_loss(logits_w, yw, m, dice=dice)
        terms = {"sup": loss_sup.item()}
        loss = loss_sup
        if self.settings.method != "partial" and self.warming_up():
            terms["cda"] = 0.0
        elif self.settings.method != "partial":
            with torch.no_grad():
                teacher_logits, _ = self._forward(self.teacher, xw)
                pseudo = merge_pseudo_labels(torch.sigmoid(teacher_logits), yw, m)
            loss_cda = loss.new_zeros(())
            loss_proto = loss.new_zeros(())
            for _ in range(self.settings.n_strong):
                xs = apply_intensity(intensity_params(x.shape[0], g), xw, g)
                params = cutmix_params(x.shape[0], *x.shape[-2:], generator=g)
                xs, ps, ys, ms = apply_cutmix(params, xs, pseudo, yw, m)
                logits_s, features = self._forward(model, xs)
                loss_cda = loss_cda + supervised_loss(logits_s, ps, torch.ones_like(ps),
                                                      dice=dice)
                loss_cda = loss_cda + supervised_loss(logits_s, ys, ms, dice=dice)
                if self.stage == 2:
                    loss_proto = loss_proto + self._prototype_step(features, ps, ms)
            loss = loss + loss_cda + loss_proto
            terms["cda"] = loss_cda.item()
            if self.stage == 2:
                terms["proto"] = loss_proto.item()
        return loss, terms

    def weak_view(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weak view of a batch: affine warp, then (``settings.tone``) gamma/contrast."""
        g = self.generator
        xw, yw = apply_affine(weak_params(x.shape[0], generator=g), x, y)
        if self.settings.tone:
            xw = apply_tone(tone_params(x.shape[0], generator=g), xw)
        return xw, yw

    def warming_up(self) -> bool:
        """Whether the step under way is in the warm-up (partial labels only, no teacher).

        For the first ``warmup_fraction`` of the run, ``cda`` and ``ltuda`` train like
        ``partial``: each step costs one U-Net pass instead of four, and the teacher (still
        updated every step) only starts to supervise once it segments something.
        """
        return self.stage == 1 and self.progress < self.settings.warmup_fraction

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns its loss terms."""
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
        self.step += 1
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
        if self.settings.proto_pixels > 0:
            keep = sample_per_class(flat_t, self.settings.proto_pixels, self.generator)
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
        lr = self.settings.lr * (1 - min(max(progress, 0.0), 0.999)) ** 0.9
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
        n_batches = n_batches or int(self.settings.extra.get("proto_init_batches", 8))
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

    def run(self, on_epoch: Callable[[dict], None],
            on_step: Callable[[dict], None] | None = None, *,
            checkpoint: RunCheckpoint | None = None) -> None:
        """Train until the epochs or the time budget run out, calling ``on_epoch`` each epoch.

        Continues where a :meth:`restore`-d state left off. ``on_epoch`` receives a record with
        ``epoch``, ``stage``, ``lr``, mean losses, ``val`` (Dice per organ of the
        best-validating classifier), ``classifier`` (its name: ``linear`` in stage 1; in stage
        2 the best of linear, labeled and unlabeled; :data:`TEACHER` when the mean teacher
        validates best, see :meth:`model_state`), ``val_by_classifier`` (mean Dice of each
        classifier validated) and ``elapsed``. With several processes only rank 0 validates
        and calls ``on_epoch``.

        Args:
            on_epoch: Called after each epoch's validation.
            on_step: Called after each step (``epoch``, ``step``, ``steps`` and loss terms).
            checkpoint: Where and how often to save a resumable checkpoint (also saved at
                the end); ``None``: never.
        """
        s = self.settings
        clock = RunClock(self.elapsed)
        limit = None if s.max_time is None else s.max_time * 60
        steps = self.steps_per_epoch
        if checkpoint is not None:
            checkpoint.start(self.elapsed)
        while self.epoch <= s.epochs and not self.finished:
            epoch = self.epoch
            stop = False
            while self.epoch_step < steps:
                i = self.epoch_step
                elapsed = clock.agreed() if limit else clock.local()
                progress = (epoch - 1 + i / steps) / s.epochs
                if limit:
                    progress = max(progress, elapsed / limit)
                self.progress = progress
                if (s.method == "ltuda" and self.stage == 1
                        and progress >= max(s.stage1_fraction, s.warmup_fraction)):
                    self.start_stage2()
                self.lr = self.set_lr(progress)
                terms = self.train_step()
                for key, v in terms.items():
                    self.sums[key] = self.sums.get(key, 0.0) + v
                self.epoch_step += 1
                if on_step is not None:
                    on_step({"epoch": epoch, "step": i + 1, "steps": steps, **terms})
                if not limit and checkpoint is None:
                    continue
                now = clock.agreed()
                if limit and now >= limit:
                    stop = True
                    break
                if checkpoint is not None and checkpoint.due(now):
                    self._save(checkpoint, now)
            n = max(self.epoch_step, 1)
            if self.dist.is_main:
                classifiers = CLASSIFIERS if self.stage == 2 else ("linear",)
                vals = validate_all(self.model, self.val_cases, classifiers, self.device)
                if self.teacher is not None:
                    vals[TEACHER] = self.validate_teacher()
                    classifiers = (*classifiers, TEACHER)
                # The classifier that validates best (ties: the first of linear, labeled,
                # unlabeled); without any score, the paper's test-time choice (unlabeled in
                # stage 2).
                classifier = max(classifiers, key=lambda c: mean_score(vals[c]))
                if not np.isfinite(mean_score(vals[classifier])):
                    classifier = "unlabeled" if self.stage == 2 else "linear"
                on_epoch({
                    "epoch": epoch, "stage": self.stage, "lr": self.lr,
                    **{f"loss_{k}": v / n for k, v in self.sums.items()},
                    "val": vals[classifier], "classifier": classifier,
                    "val_by_classifier": {c: mean_score(v) for c, v in vals.items()},
                    "elapsed": clock.local(),
                })
            self.epoch += 1
            self.epoch_step = 0
            self.sums = {}
            if stop:
                log.info("time budget of %.1f min reached after %d epochs", s.max_time, epoch)
                self.finished = True
                break
            if checkpoint is not None:
                now = clock.agreed()
                if checkpoint.due(now):
                    self._save(checkpoint, now)
        self.finished = True
        if checkpoint is not None:
            self._save(checkpoint, clock.agreed())

    # ------------------------------------------------------------------ checkpoints
    def fingerprint(self) -> dict[str, Any]:
        """Settings and data a resumed run must share with the run it continues."""
        settings = asdict(self.settings)
        return {
            "training": settings,
            "architecture": architecture_digest(self.model),
            "train_data": digest([x for c in self.train_cases for x in
                                  (c.name, str(c.dataset), c.image, c.target, c.labeled)]),
            "val_data": digest([x for c in self.val_cases for x in
                                (c.name, str(c.dataset), c.image, c.target, c.labeled)]),
            "world_size": self.dist.world_size,
        }

    def _run_meta(self) -> dict[str, Any]:
        return {"stage": self.stage, "sums": self.sums, "lr": self.lr, "record": self.record}

    def _run_tensors(self) -> dict[str, torch.Tensor]:
        tensors = prefixed("model", self.model.state_dict())
        if self.teacher is not None:
            tensors.update(prefixed("teacher", self.teacher.state_dict()))
        return tensors

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
        self.record = dict(meta["record"])
