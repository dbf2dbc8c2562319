"""Public API of LTUDA: :func:`train` a model folder, :func:`predict` label volumes with it.

Example:
    >>> from sparseseg.ltuda import DatasetSpec, train, predict  # doctest: +SKIP
    >>> model = train(output="model", datasets=[
    ...     DatasetSpec("Task03_Liver", {"liver": [1, 2]}),
    ...     DatasetSpec("Task09_Spleen", {"spleen": [1]}),
    ... ], max_time=30)
    >>> predict(model=model, inputs="scans/", output="labels/")
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparseseg.errors import InputError, SparsesegError
from sparseseg.ltuda.spec import DatasetSpec, validate_specs

if TYPE_CHECKING:
    from sparseseg.ltuda.trainer import EpochResult, Trainer
    from sparseseg.training_loop import StepReport

log = logging.getLogger(__name__)


def _format_dice(organs: Sequence[str], val: np.ndarray) -> str:
    return " ".join(f"{o}={v:.3f}" for o, v in zip(organs, val, strict=True) if v == v)


def train(
    *,
    output: str | Path,
    datasets: Sequence[DatasetSpec],
    method: str = "ltuda",
    epochs: int = 100,
    max_time: float | None = None,
    size: int = 128,
    base_channels: int = 16,
    device: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.2,
    val_group: str | None = None,
    progress: bool = True,
    batch_size: int = 4,
    optimizer: str = "adam",
    lr: float = 1e-3,
    components: Mapping[str, int] | None = None,
    loss: str = "bce",
    strong_views: int = 2,
    proto_pixels: int = 2048,
    ema: float = 0.999,
    stage1_fraction: float = 0.5,
    warmup_fraction: float = 0.3,
    pseudo_confidence: float = 0.0,
    weak_view_loss: bool = True,
    teacher_flip: bool = False,
    exclusion: bool = False,
    tone_augmentation: bool = True,
    precision: str = "auto",
    checkpoint_every: float | None = 5.0,
    resume: bool = False,
    on_epoch: Callable[[EpochResult, Trainer], None] | None = None,
) -> Path:
    """Train one multi-organ model from partially labeled datasets.

    The best epoch is chosen by the mean validation Dice over organs on a held-out part of the
    training datasets, scored with their own partial labels (never test data). In stage 2 of
    ``ltuda`` each epoch validates the linear, labeled-prototype and unlabeled-prototype
    classifiers, and in ``cda`` and ``ltuda`` the mean teacher's linear classifier too; the
    best one is used and recorded in ``config.json["classifier"]`` (and ``"weights"``:
    ``student`` or ``teacher``); ``log.csv`` keeps each one's mean Dice as
    ``val_mean_<classifier>``.

    Under ``torchrun`` the processes train data-parallel (see :mod:`sparseseg.distributed`);
    only rank 0 validates, writes files and shows progress.

    Args:
        output: Model folder to write (``config.json``, ``model.safetensors``, ``log.csv``,
            ``curves.png``, and the resumable checkpoint ``resume.safetensors``).
        datasets: Dataset folders and the organs each labels.
        method: ``partial`` (baseline), ``cda`` (stage 1) or ``ltuda`` (both stages).
        epochs: Maximum epochs (an epoch is one pass over the training slices on average).
        max_time: Time budget in minutes; training stops and the best model is kept.
        size: Slices are resized to ``size x size`` (paper: 256).
        base_channels: U-Net width of the first level (paper: 64).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Random seed.
        val_fraction: Fraction of each dataset's cases held out for model selection.
        val_group: A regular expression naming a case's subject (patient) in its name (its
            first match, or first group), e.g. ``patient\\d+`` for ACDC's
            ``patient001_frame01``: cases of one subject are then held out together, so
            validation scores patients the network did not train on. Default: cases are
            held out one by one.
        progress: Show a tqdm progress bar.
        batch_size: Slices per step (paper: 4).
        optimizer: ``adam`` (default: learns within CPU budgets) or ``sgd`` (paper: lr 1e-3,
            momentum 0.99, Nesterov), both with poly decay 0.9.
        lr: Initial learning rate.
        components: Connected components to keep per organ at prediction (default 1 each).
        loss: ``bce`` (the paper's partial BCE) or ``bce+dice`` (adds a partial soft Dice on
            the same known pixels; learns small structures faster).
        strong_views: Strong (CutMix) views of each batch the student learns from in ``cda``
            and ``ltuda`` (paper: 2; 1 halves their cost).
        proto_pixels: Pixels of each class per strong view that the stage-2 prototype losses
            and updates use, drawn at random (``0``: every pixel, as in the paper).
        ema: Final decay of the mean teacher's exponential moving average (paper: 0.999;
            smaller follows the student faster, for short runs).
        stage1_fraction: Fraction of an ``ltuda`` run (epochs or time) before stage 2
            starts (never inside the warm-up, the first 0.3); ``1.0``: stage 1 only, like
            ``cda``. A stage-2 step costs about 1.6 stage-1 steps on a CPU
            (:mod:`sparseseg.ltuda.trainer`); 0.8 gave stage 1 that time but no better test
            Dice on Cardiac (docs/benchmarks.md, 2026-12-05).
        warmup_fraction: Fraction of a ``cda`` or ``ltuda`` run (epochs or time) trained on
            the partial labels alone before the teacher's pseudo-labels supervise (its weights
            are averaged all along). Longer gives the pseudo-labels a better teacher and the
            rest of the run less time; ``0``: pseudo-labels from the first step.
        pseudo_confidence: In ``cda`` and ``ltuda``, supervise the strong views' merged
            pseudo-labels only where the teacher is sure of each unlabeled organ (probability
            at least this or at most one minus it; :func:`sparseseg.ltuda.pseudo.confident_mask`);
            ``0`` (the paper): every pixel.
        weak_view_loss: In ``cda`` and ``ltuda`` after the warm-up, also train the student on
            the weak view's partial labels (the paper). ``False`` skips that pass: the strong
            views (with their mixed partial labels) carry all the supervision, and a step
            costs about 0.6 of one with it, so a time budget trains more steps.
        teacher_flip: In ``cda`` and ``ltuda``, pseudo-labels from the mean of the teacher's
            probabilities on the weak view and on its mirror image (one more teacher pass a
            step; off: the paper).
        exclusion: Organs exclude each other: where a sample's ground truth puts a labeled
            organ, the loss also teaches every other organ's channel "absent", also those its
            dataset does not label (:func:`~sparseseg.ltuda.losses.with_exclusion`; off: the
            paper's partial loss).
        tone_augmentation: Random gamma and contrast in the weak view of every method (not in
            the paper): a channel learned from the few patients of one dataset then still
            finds its organ in the others' images (``False``: the paper's weak view).
        precision: ``auto``, ``fp32`` or ``bf16`` (:mod:`sparseseg.precision`; ``auto``:
            bf16 mixed precision on GPUs that have it and on CPUs with AMX, fp32 elsewhere).
        checkpoint_every: Minutes of training between resumable checkpoints
            (``output/resume.safetensors``, also written at the end); ``0`` or ``None``: none.
        resume: Continue from ``output/resume.safetensors`` when it exists (the settings and
            data must be the same); without it, training starts from scratch.
        on_epoch: Called on rank 0 after each epoch's validation (and after the model folder
            is updated) with the epoch's :class:`~sparseseg.ltuda.trainer.EpochResult` and
            the :class:`~sparseseg.ltuda.trainer.Trainer`, e.g. to keep every epoch's weights
            (``benchmarks/ltuda_diagnose.py``); its time counts towards ``max_time``.

    Returns:
        The model folder.

    Raises:
        SparsesegError: Bad dataset specs or unreadable/inconsistent data.
        ModelError: ``resume`` with a corrupt checkpoint or one made with other settings.
    """
    import torch

    from sparseseg import distributed
    from sparseseg.device import resolve_device
    from sparseseg.ltuda.data import load_cases, split_validation, subject_pattern
    from sparseseg.ltuda.model import LTUDAModel
    from sparseseg.ltuda.network import default_depth
    from sparseseg.ltuda.trainer import TrainConfig, Trainer
    from sparseseg.precision import precision_name, resolve_precision
    from sparseseg.runstate import RESUME_NAME, prepare_checkpoint

    _check_settings(method=method, epochs=epochs, size=size, base_channels=base_channels,
                    batch_size=batch_size, strong_views=strong_views, proto_pixels=proto_pixels,
                    ema=ema, max_time=max_time, checkpoint_every=checkpoint_every, loss=loss,
                    val_fraction=val_fraction, stage1_fraction=stage1_fraction,
                    warmup_fraction=warmup_fraction, pseudo_confidence=pseudo_confidence)
    subject = subject_pattern(val_group) if val_group is not None else None
    datasets = [d if isinstance(d, DatasetSpec) else DatasetSpec(*d) for d in datasets]
    organs = validate_specs(datasets)
    components = dict(components or {})
    unknown = set(components) - set(organs)
    if unknown:
        raise SparsesegError(f"components given for unknown organ(s): {sorted(unknown)}")
    dev = resolve_device(device)
    amp = resolve_precision(precision, dev)  # refuses bf16 where it is missing, early
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a folder", output)

    with distributed.session(dev) as (dist, dev):
        progress = progress and dist.is_main
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        cases = load_cases(datasets, organs, size)
        train_cases, val_cases = split_validation(cases, val_fraction, rng, subject=subject)
        if not val_cases:
            log.warning("no validation cases (too few cases or val_fraction=0): keeping the "
                        "last epoch instead of the best")
        log.info("%d training and %d validation cases, organs: %s", len(train_cases),
                 len(val_cases), ", ".join(organs))
        model = LTUDAModel(n_organs=len(organs), base_channels=base_channels,
                           depth=default_depth(size))
        config = TrainConfig(method=method, epochs=int(epochs), max_time=max_time,
                             batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed,
                             dice=loss == "bce+dice", n_strong=int(strong_views),
                             proto_pixels=int(proto_pixels), ema=float(ema),
                             stage1_fraction=float(stage1_fraction),
                             warmup_fraction=float(warmup_fraction),
                             pseudo_confidence=float(pseudo_confidence),
                             weak_view_loss=bool(weak_view_loss),
                             teacher_flip=bool(teacher_flip), exclusion=bool(exclusion),
                             tone=bool(tone_augmentation), precision=precision)
        trainer = Trainer(model, train_cases, val_cases, config, dev, dist=dist)
        if dist.is_main:
            output.mkdir(parents=True, exist_ok=True)
        info = {
            "method": method,
            "datasets": [{"path": str(d.path), "organs": d.organs} for d in datasets],
            "training": {"epochs": epochs, "max_time_min": max_time, "optimizer": optimizer,
                         "lr": lr, "batch_size": batch_size, "seed": seed, "loss": loss,
                         "strong_views": strong_views, "proto_pixels": proto_pixels, "ema": ema,
                         "stage1_fraction": float(stage1_fraction),
                         "warmup_fraction": float(warmup_fraction),
                         "pseudo_confidence": float(pseudo_confidence),
                         "weak_view_loss": bool(weak_view_loss),
                         "teacher_flip": bool(teacher_flip),
                         "exclusion": bool(exclusion),
                         "tone_augmentation": bool(tone_augmentation),
                         "precision": precision, "precision_used": precision_name(amp),
                         "val_fraction": val_fraction, "val_group": val_group,
                         "val_cases": [c.name for c in val_cases]},
        }
        if dist.enabled:
            info["distributed"] = {"world_size": dist.world_size, "backend": dist.backend}
        checkpoint, resumed = prepare_checkpoint(trainer, output, kind="ltuda",
                                                 every_minutes=checkpoint_every,
                                                 resume=resume, rank=dist.rank)
        if resumed:
            log.info("resuming from %s at epoch %d, step %d", output / RESUME_NAME,
                     trainer.epoch, trainer.step)
        folder = _RunFolder(output, trainer, organs=organs, size=size, components=components,
                            info=info)
        bar = _ProgressBar(f"ltuda {method}", organs, epochs=epochs, done=trainer.epoch - 1,
                           max_time=max_time, disable=not progress)

        def epoch_done(result: EpochResult) -> None:
            folder.add(result)
            bar.epoch_done(result)
            if on_epoch is not None:
                on_epoch(result, trainer)

        try:
            trainer.fit(bar.step_done if progress else None, on_epoch=epoch_done,
                        checkpoint=checkpoint)
        finally:
            bar.close()
        if dist.is_main:
            best = trainer.best
            log.info("best epoch %s (validation mean Dice %.3f, %s classifier); model in %s",
                     best.epoch, best.score, best.classifier, output)
    return output


def _check_settings(*, method: str, epochs: int, size: int, base_channels: int,
                    batch_size: int, strong_views: int, proto_pixels: int, ema: float,
                    max_time: float | None, checkpoint_every: float | None, loss: str,
                    val_fraction: float, stage1_fraction: float, warmup_fraction: float,
                    pseudo_confidence: float) -> None:
    """Refuse settings :func:`train` cannot use (before any data is read).

    Raises:
        SparsesegError: Naming the setting and the value.
    """
    from sparseseg.ltuda.trainer import METHODS

    if method not in METHODS:
        raise SparsesegError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    for name, value, low in (("epochs", epochs, 1), ("size", size, 8),
                             ("base_channels", base_channels, 1), ("batch_size", batch_size, 1),
                             ("strong_views", strong_views, 1), ("proto_pixels", proto_pixels, 0)):
        if int(value) < low:
            raise SparsesegError(f"{name} must be >= {low}, got {value}")
    if not 0 < ema < 1:
        raise SparsesegError(f"ema must be in (0, 1), got {ema}")
    if max_time is not None and max_time <= 0:
        raise SparsesegError(f"max_time must be positive, got {max_time}")
    if checkpoint_every is not None and checkpoint_every < 0:
        raise SparsesegError(f"checkpoint_every must be >= 0 minutes, got {checkpoint_every}")
    if loss not in ("bce", "bce+dice"):
        raise SparsesegError(f"unknown loss {loss!r}; use bce or bce+dice")
    if not 0 <= val_fraction < 1:
        raise SparsesegError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 < stage1_fraction <= 1:
        raise SparsesegError(f"stage1_fraction must be in (0, 1], got {stage1_fraction}")
    if not 0 <= warmup_fraction < 1:
        raise SparsesegError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    if not (pseudo_confidence == 0 or 0.5 < pseudo_confidence < 1):
        raise SparsesegError(f"pseudo_confidence must be 0 or in (0.5, 1), got {pseudo_confidence}")


class _RunFolder:
    """The model folder of a training run: the best epoch's model, ``log.csv`` and
    ``curves.png``, rewritten after each epoch (rank 0).

    Args:
        output: The model folder.
        trainer: The run's trainer (its weights, history and best epoch).
        organs: Organ names.
        size: In-plane slice size.
        components: Connected components to keep per organ at prediction.
        info: Records of the run for ``config.json``.
    """

    def __init__(self, output: Path, trainer: Trainer, *, organs: Sequence[str], size: int,
                 components: Mapping[str, int], info: Mapping[str, Any]) -> None:
        self.output = output
        self.trainer = trainer
        self.organs = list(organs)
        self.size = size
        self.components = dict(components)
        self.info = dict(info)

    def add(self, result: EpochResult) -> None:
        """Save the epoch's model when it is the best so far; rewrite the log."""
        if result.best:
            self.save_model(result)
        _write_log(self.output, [_log_row(r, self.organs) for r in self.trainer.history],
                   self.organs)

    def save_model(self, result: EpochResult) -> None:
        """Write the weights that scored ``result`` with the record of its validation."""
        from sparseseg.ltuda.trainer import TEACHER

        from_teacher = result.classifier == TEACHER
        info = {**self.info, "weights": "teacher" if from_teacher else "student",
                "best_epoch": result.epoch,
                "val_dice": {o: (None if v != v else float(v))
                             for o, v in zip(self.organs, result.val, strict=True)}}
        self.trainer.model.save(
            self.output, organs=self.organs, size=self.size,
            classifier="linear" if from_teacher else result.classifier,
            components=self.components, info=info,
            state=self.trainer.model_state(result.classifier))


def _log_row(result: EpochResult, organs: Sequence[str]) -> dict[str, Any]:
    """One row of ``log.csv``."""
    score = result.score
    return {"epoch": result.epoch, "stage": result.stage, "lr": result.lr,
            **{f"loss_{k}": v for k, v in result.losses.items()},
            **{f"val_dice_{o}": v for o, v in zip(organs, result.val, strict=True)},
            "val_dice_mean": score if math.isfinite(score) else float("nan"),
            **{f"val_mean_{c}": (v if math.isfinite(v) else float("nan"))
               for c, v in result.val_by_classifier.items()},
            "classifier": result.classifier, "elapsed_s": result.elapsed}


class _ProgressBar:
    """A tqdm bar of epochs whose postfix shows the step, the loss and the last validation.

    Args:
        desc: The bar's title.
        organs: Organ names.
        epochs: Epochs of the run.
        done: Epochs done before (a resumed run).
        max_time: Time budget in minutes (shows the minutes left).
        disable: Show nothing.
    """

    def __init__(self, desc: str, organs: Sequence[str], *, epochs: int, done: int,
                 max_time: float | None, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.organs = list(organs)
        self.max_time = max_time
        self.text = ""
        self.bar = tqdm(total=epochs, initial=min(done, epochs), disable=disable, desc=desc,
                        unit="epoch")

    def step_done(self, report: StepReport) -> None:
        """Show the step under way and its loss."""
        self.bar.set_postfix_str(f"epoch {report.epoch} step {report.epoch_step}/"
                                 f"{report.steps_per_epoch} loss {report.values['total']:.3f} "
                                 f"{self.text}", refresh=False)

    def epoch_done(self, result: EpochResult) -> None:
        """Advance by an epoch; show its loss, validation Dice and the time left."""
        left = ""
        if self.max_time:
            left = f" left {max(0.0, self.max_time - result.elapsed / 60):.1f} min"
        self.text = f"| val {_format_dice(self.organs, result.val)}{left}"
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss {result.losses.get('total', float('nan')):.3f} "
                                 f"{self.text}")
        log.debug("epoch %d: %s", result.epoch, _log_row(result, self.organs))

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


def _write_log(output: Path, history: list[dict], organs: Sequence[str]) -> None:
    from sparseseg.io import atomic_path
    from sparseseg.ltuda.curves import plot_curves

    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(output / "log.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    losses = {k[5:]: [r.get(k, float("nan")) for r in history]
              for k in keys if k.startswith("loss_")}
    scores = {k[9:]: [r[k] for r in history] for k in keys if k.startswith("val_dice_")}
    with atomic_path(output / "curves.png") as tmp:
        plot_curves(tmp, losses, scores)


def predict(
    *,
    model: str | Path,
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    device: str = "auto",
    progress: bool = True,
    num_parts: int = 1,
    part_id: int = 0,
    skip_existing: bool = False,
) -> list[Path]:
    """Segment volumes with a trained model; write label maps in each input's geometry.

    Output label ``k`` (1-based) is the ``k``-th organ of ``config.json``'s ``organs``.
    With an output folder this is a batch run (:func:`sparseseg.batch.run_batch`): a case
    that cannot be read is reported and the others are still written; cases can be split
    across workers and an interrupted run resumed.

    Args:
        model: Model folder written by :func:`train`.
        inputs: An image file, a folder of images, or a dataset folder (``imagesTr/``).
        output: Output file when there is a single input file and the name has a volume
            extension, else a folder (created) receiving ``CASE.nii.gz`` files.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: Show a progress bar.
        num_parts: Split the cases (sorted by name) into this many parts (output folder only).
        part_id: The part to process, ``0 .. num_parts - 1``.
        skip_existing: Skip cases whose output file exists (output folder only).

    Returns:
        The written file, or with an output folder the output file of every case of the
        part (sorted by case name), including those skipped because they existed.

    Raises:
        BatchError: With an output folder, some cases failed; the others are written.
        SparsesegError: Bad arguments, unusable model or input, or an output that cannot
            be written.
    """
    from sparseseg.batch import BatchError, run_batch, validate_parts
    from sparseseg.device import resolve_device
    from sparseseg.io import find_cases, read_volume, write_volume
    from sparseseg.io.formats import is_volume_file
    from sparseseg.ltuda.predictor import load_ltuda, segment_volume

    validate_parts(num_parts, part_id)
    dev = resolve_device(device)
    config, net = load_ltuda(model, dev)
    cases = find_cases(inputs)
    output = Path(output)
    single_file = len(cases) == 1 and is_volume_file(output) and not output.is_dir()
    if single_file:
        if num_parts != 1 or part_id != 0 or skip_existing:
            raise SparsesegError("num_parts, part_id and skip_existing (--num-parts, "
                                 "--part-id, --continue) need an output folder", output)
        volume = read_volume(cases[0].image)
        labels = segment_volume(net, volume, config, dev)
        log.info("%s -> %s", cases[0].image, output)
        return [write_volume(output, labels, volume, dtype=np.uint8)]

    def work(case):
        volume = read_volume(case.image)
        return segment_volume(net, volume, config, dev), volume

    def save(result, target: Path) -> None:
        labels, volume = result
        write_volume(target, labels, volume, dtype=np.uint8)

    report = run_batch(cases, output=output, work=work, save=save, num_parts=num_parts,
                       part_id=part_id, skip_existing=skip_existing, progress=progress,
                       desc="ltuda predict")
    if report.failed:
        raise BatchError(report)
    return [report.outputs[name] for name in sorted(report.outputs)]
