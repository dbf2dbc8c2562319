"""OneSeg's Python API: ``train``, ``select`` and ``propagate`` (keyword-only arguments).

Example:
    >>> from sparseseg import oneseg
    >>> oneseg.train(images=["LeftAtrium"], output="la_model", max_time=10)  # doctest: +SKIP
    >>> k = oneseg.select(model="la_model", image="case.nii.gz")  # doctest: +SKIP
    >>> oneseg.propagate(model="la_model", image="case.nii.gz", annotation="slice.nii.gz",
    ...                  output="label.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sparseseg.device import resolve_device
from sparseseg.errors import InputError, ModelError
from sparseseg.io.axes import SLICE_AXIS, from_slices, slice_shape, to_slices
from sparseseg.io.dataset import find_cases
from sparseseg.io.reader import read_volume
from sparseseg.io.volume import Volume
from sparseseg.io.writer import atomic_path, write_volume
from sparseseg.oneseg.adaptation import AdaptConfig, adapt_model
from sparseseg.oneseg.annotation import (
    SliceAnnotation,
    annotated_slices,
    check_on_image_grid,
    read_annotation,
    with_empty_slices,
)
from sparseseg.oneseg.baselines import METHODS, MODEL_METHODS, PROPAGATORS, baseline_propagator
from sparseseg.oneseg.guided_adaptation import GuidedAdaptConfig, adapt_to_annotation
from sparseseg.oneseg.hybrid import HYBRID_WEIGHT, HybridPropagator
from sparseseg.oneseg.intensity import INTENSITY_WEIGHT
from sparseseg.oneseg.interpolation import interpolate
from sparseseg.oneseg.model import (
    DEFAULT_MODEL_DIR,
    PROPAGATION_TEMPERATURE,
    OneSegModel,
    check_volume,
)
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.norm_adaptation import adapt_norm
from sparseseg.oneseg.preprocess import volume_to_slices
from sparseseg.oneseg.propagation import (
    FUSIONS,
    OneSegPropagator,
    ProgressFunction,
    Propagation,
    Propagator,
    propagate_annotation,
)
from sparseseg.oneseg.screening import (
    label_box,
    middle_structure_slice,
    most_representative,
    region_descriptors,
    structure_slices,
)
from sparseseg.oneseg.suggestion import (
    CRITERIA,
    CROSS_MIN_SLICES,
    CROSS_WEIGHT,
    cross_check_doubt,
    slice_scores,
    suggest_slice,
)
from sparseseg.oneseg.training import OneSegTrainer, TrainConfig, TrainState
from sparseseg.precision import precision_name, resolve_precision

log = logging.getLogger(__name__)

PathLike = str | Path
ADAPT_MODES = ("guided", "norm", "self")
"""Test-time adaptation modes (:func:`adapt`)."""


def _as_volume(image: PathLike | Volume) -> Volume:
    return image if isinstance(image, Volume) else read_volume(image)


def _as_model(model: PathLike | OneSegModel | None, device: str) -> OneSegModel:
    """The given model, loaded if it is a folder; the shipped default model for ``None``."""
    if isinstance(model, OneSegModel):
        return model
    if model is None:
        model = default_model_path()
        log.info("no model given: using the default model (%s)", model)
    return OneSegModel.load(model, device=resolve_device(device))


def default_model_path() -> Path:
    """Folder of the default model shipped in the package (see its ``MODEL_CARD.md``).

    Raises:
        ModelError: The installed package lacks it (a broken or partial install).
    """
    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        raise ModelError("the default model is missing from this installation; give a model "
                         "folder with -m", DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR


def adapt(
    *,
    model: PathLike | OneSegModel | None = None,
    image: PathLike | Volume,
    seconds: float,
    annotation: AnnotationInput | None = None,
    slice_index: int | Sequence[int] | None = None,
    mode: str = "guided",
    device: str = "auto",
    seed: int = 0,
) -> OneSegModel:
    """A copy of the model fine-tuned on one volume (test-time adaptation).

    Three modes (the given model is not changed):

    * ``guided`` (default; needs ``annotation``): 10 steps that make the drawn labels survive
      a copy to neighbouring slices and back, beside OneSeg's intensity reconstruction
      (:mod:`sparseseg.oneseg.guided_adaptation`); stops early if ``seconds`` run out. On
      AbdomenTS MR it gains 0.13 Dice with ``intensity_weight=0`` and 0.02 with the default
      intensity decision; on CT it loses 0.02; on Cardiac it gains 0.05.
    * ``norm``: the batch-norm statistics re-estimated on the volume's slices, no labels, one
      pass (:mod:`sparseseg.oneseg.norm_adaptation`; about a second; ``seconds`` unused). It
      gains 0.002-0.016 on LeftAtrium, Cardiac and AbdomenTS CT and MR, and loses on none.
    * ``self``: OneSeg's own training loss on the volume's slices, no labels, for ``seconds``
      (:mod:`sparseseg.oneseg.adaptation`). Measured, it loses 0.02-0.05 Dice on AbdomenTS;
      kept for comparison.

    Args:
        model: Model folder or loaded model (``None``: the default model).
        image: Volume file or loaded volume.
        seconds: Time budget (> 0; for ``guided``, a cap; not used by ``norm``).
        annotation: The annotated slices (as for :func:`propagate`); ``guided`` only.
        slice_index: Index of a 2D annotation (one per 2D file).
        mode: ``guided``, ``norm`` or ``self`` (:data:`ADAPT_MODES`).
        device: Where to compute.
        seed: Random seed.

    Returns:
        The adapted model.

    Raises:
        InputError: A budget that is not positive, an unknown mode, ``guided`` without an
            annotation, or a volume of fewer than two slices.
    """
    if not seconds > 0:
        raise InputError(f"--adapt needs a positive number of seconds, got {seconds}")
    if mode not in ADAPT_MODES:
        raise InputError(f"unknown adaptation mode {mode!r} ({', '.join(ADAPT_MODES)})")
    vol = _as_volume(image)
    check_volume(vol.array, vol.path)
    if vol.shape[SLICE_AXIS] < 2:
        raise InputError("test-time adaptation needs at least two slices", vol.path)
    net = _as_model(model, device)
    slices = net.slice_tensors(vol.array)
    if mode == "norm":
        return adapt_norm(net, slices, seed=seed)
    if mode == "self":
        return adapt_model(net, slices, config=AdaptConfig(seconds=float(seconds), seed=seed))
    if annotation is None:
        raise InputError("guided adaptation needs the annotated slices (or mode 'self')",
                         vol.path)
    ann = _as_annotation(annotation, vol, slice_index)
    config = GuidedAdaptConfig(seconds=float(seconds), seed=seed)
    return adapt_to_annotation(net, slices, ann.slices, config=config)


def train(
    *,
    images: PathLike | Sequence[PathLike],
    output: PathLike,
    epochs: int = 6,
    max_time: float | None = None,
    size: int = 128,
    device: str = "auto",
    seed: int = 0,
    bottleneck: str = "gabor",
    pairs: str = "screened",
    local_chains: int = 6,
    scheduled_sampling: bool = True,
    cycle: bool = True,
    batch_size: int = 8,
    pairs_per_epoch: int = 1600,
    precision: str = "auto",
    network: NetworkConfig | None = None,
    training: TrainConfig | None = None,
    checkpoint_every: float | None = 5.0,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train OneSeg self-supervised on unlabeled volumes and save a model folder.

    Under ``torchrun`` the processes train data-parallel (see :mod:`sparseseg.distributed`);
    only rank 0 writes files and shows progress.

    Args:
        images: Volume files, folders of volumes, or dataset folders (``imagesTr/`` only;
            labels are never read).
        output: Model folder to write (``config.json`` + ``model.safetensors``, and the
            resumable checkpoint ``resume.safetensors``).
        epochs: Training epochs (learning rate halves after each).
        max_time: Stop after this many minutes and save the model as it is.
        size: In-plane size slices are resized to (paper: 256; 128 is much faster on a CPU).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Random seed (same seed, same data, CPU: same model).
        bottleneck: ``gabor`` (OneSeg), ``edge`` (Sli2Vol) or ``intensity`` (ablation).
        pairs: ``screened`` (OneSeg) or ``random`` (ablation).
        local_chains: Short chains of near-neighbour pairs (1-3 slices apart) added per
            volume and epoch to the screened pairs; ``0`` trains on screened pairs only, as in
            the paper (see :mod:`sparseseg.oneseg.training`).
        scheduled_sampling: Use scheduled sampling (ablation: False).
        cycle: Use cycle consistency (ablation: False).
        batch_size: Samples per step and process.
        pairs_per_epoch: Training samples per epoch (all processes together).
        precision: ``auto``, ``fp32`` or ``bf16`` (:mod:`sparseseg.precision`; ``auto``:
            bf16 mixed precision on GPUs that have it and on CPUs with AMX, fp32 elsewhere).
        network: Full network settings (overrides ``bottleneck``).
        training: Full training settings (overrides the simple arguments above).
        checkpoint_every: Minutes of training between resumable checkpoints
            (``output/resume.safetensors``, also written at the end); ``0`` or ``None``: none.
        resume: Continue from ``output/resume.safetensors`` when it exists (the settings and
            data must be the same); without it, training starts from scratch.
        progress: Show a progress bar.

    Returns:
        The model folder.

    Raises:
        InputError: No usable volume among the inputs, an unreadable one, or a bad setting.
        ModelError: ``resume`` with a corrupt checkpoint or one made with other settings.
    """
    from sparseseg import distributed
    from sparseseg.runstate import RESUME_NAME, prepare_checkpoint

    dev = resolve_device(device)
    if checkpoint_every is not None and checkpoint_every < 0:
        raise InputError(f"checkpoint_every must be >= 0 minutes, got {checkpoint_every}")
    net_cfg = network or NetworkConfig(bottleneck=bottleneck)
    cfg = training or TrainConfig(
        epochs=epochs,
        max_time=max_time,
        size=size,
        seed=seed,
        pairs=pairs,
        local_chains=local_chains,
        scheduled_sampling=scheduled_sampling,
        cycle=cycle,
        batch_size=batch_size,
        pairs_per_epoch=pairs_per_epoch,
        precision=precision,
    )
    amp = resolve_precision(cfg.precision, dev)  # refuses bf16 where it is missing, early
    if cfg.pairs not in ("screened", "random"):
        raise InputError(f"unknown pair mode {cfg.pairs!r} (screened or random)")
    for name, value, low in (("epochs", cfg.epochs, 0), ("batch_size", cfg.batch_size, 1),
                             ("local_chains", cfg.local_chains, 0),
                             ("pairs_per_epoch", cfg.pairs_per_epoch, 1)):
        if int(value) < low:
            raise InputError(f"{name} must be >= {low}, got {value}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a folder", output)
    cases = find_cases(images if not isinstance(images, (str, Path)) else [images])
    with distributed.session(dev) as (dist, dev):
        progress = progress and dist.is_main
        volumes = []
        for case in tqdm(cases, desc="loading", disable=not progress, unit="vol", leave=False):
            vol = read_volume(case.image)
            if vol.shape[SLICE_AXIS] < 2:
                log.warning("%s: fewer than 2 slices, skipped", case.image)
                continue
            volumes.append(volume_to_slices(vol.array, size=cfg.size))
        if not volumes:
            raise InputError("no volume with at least 2 slices to train on", Path(str(images)))
        log.info(
            "training OneSeg on %d volumes (%d slices) on %s, %s%s",
            len(volumes),
            sum(len(v) for v in volumes),
            dev,
            precision_name(amp),
            f" x {dist.world_size} processes" if dist.enabled else "",
        )
        trainer = OneSegTrainer(volumes, network=net_cfg, config=cfg, device=dev, dist=dist)
        checkpoint, resumed = prepare_checkpoint(trainer, output, kind="oneseg",
                                                 every_minutes=checkpoint_every,
                                                 resume=resume, rank=dist.rank)
        if resumed:
            log.info("resuming from %s at epoch %d, step %d", output / RESUME_NAME,
                     trainer.epoch, trainer.step)
        bar = tqdm(
            total=trainer.steps_per_epoch * cfg.epochs,
            initial=trainer.step,
            disable=not progress,
            unit="step",
            desc="training",
        )

        def report(state: TrainState) -> None:
            bar.update(1)
            bar.set_postfix(
                epoch=f"{state.epoch}/{cfg.epochs}", loss=f"{state.loss:.4f}", refresh=False
            )

        try:
            net = trainer.fit(report, checkpoint=checkpoint)
        finally:
            bar.close()
        if not dist.is_main:
            return output
        extra = {
            "training": trainer.record(),
            "n_volumes": len(volumes),
            "propagation_temperature": PROPAGATION_TEMPERATURE,
        }
        if dist.enabled:
            extra["distributed"] = {"world_size": dist.world_size, "backend": dist.backend}
        model = OneSegModel(net, size=cfg.size, device=dev, extra=extra)
        path = model.save(output)
    log.info("model saved to %s", path)
    return path


SELECT_CRITERIA = ("representative", "middle")


def select(
    *,
    model: PathLike | OneSegModel | None = None,
    image: PathLike | Volume,
    criterion: str = "representative",
    annotation: AnnotationInput | None = None,
    slice_index: int | Sequence[int] | None = None,
    device: str = "auto",
) -> int:
    """The slice to annotate.

    Without an annotation the choice is organ-blind: the most representative slice of the
    whole volume. On a scan much larger than the structure (a whole-body CT) that slice may
    hold none of it; mark the structure first, roughly, on any slice (``annotation``), and
    the choice is made relative to it: the annotation is propagated, and only the slices it
    reaches, compared inside its in-plane box (with a margin), take part.

    Args:
        model: Model folder or loaded model (``None``: the default model).
        image: Volume file or loaded volume.
        criterion: ``representative``: the paper's most representative slice (Eq. 5-7);
            ``middle``: the middle one of the slices that hold structure, or that the
            annotation reaches (on LeftAtrium the better start, see ``docs/benchmarks.md``).
        annotation: A rough mark of the structure, as for :func:`propagate` (any labeled
            slices; every label counts as the structure).
        slice_index: Index of a 2D annotation along the slice axis.
        device: Where to compute.

    Returns:
        0-based index along the slice axis (the third voxel axis).

    Raises:
        InputError: Unknown criterion, bad volume or annotation.
    """
    if criterion not in SELECT_CRITERIA:
        raise InputError(
            f"unknown selection criterion {criterion!r} ({', '.join(SELECT_CRITERIA)})"
        )
    net = _as_model(model, device)
    vol = _as_volume(image)
    check_volume(vol.array, vol.path)
    if annotation is not None:
        ann = _as_annotation(annotation, vol, slice_index)
        with torch.inference_mode():
            # The propagator's features serve the comparison too: computed once.
            propagator = OneSegPropagator(net, vol.array)
            result = propagate_annotation(vol.array, ann, propagator)
        reached = to_slices(result.labels > 0)
        inside = np.flatnonzero(reached.any(axis=(1, 2)))
        if criterion == "middle":
            return int(inside[len(inside) // 2])
        descriptors = region_descriptors(propagator.feats.cpu().numpy(), label_box(reached))
        return int(inside[most_representative(descriptors[inside])])
    slices = net.slice_tensors(vol.array)
    features = net.features(slices)
    pooled = net.pooled(features)
    # Slices with almost no structure (outside the body) may not win.
    spread = slices.flatten(1).std(dim=1).cpu().numpy()
    if criterion == "middle":
        return middle_structure_slice(spread)
    return most_representative(pooled, candidates=structure_slices(spread))


AnnotationInput = PathLike | Sequence[PathLike] | Volume | np.ndarray | SliceAnnotation
"""An annotation: a label file (1..N labeled slices, or a 2D slice with its index), several
2D files, a label volume or array on the image's grid, or a :class:`SliceAnnotation`."""


def _as_annotation(annotation: AnnotationInput, vol: Volume,
                   slice_index: int | Sequence[int] | None,
                   empty_slices: Iterable[int] = ()) -> SliceAnnotation:
    ann = _read_annotation(annotation, vol, slice_index)
    empty = list(empty_slices)
    if not empty:
        return ann
    path = annotation if isinstance(annotation, (str, Path)) else getattr(annotation, "path",
                                                                            None)
    return with_empty_slices(ann, empty, path=vol.path if path is None else Path(path))


def _read_annotation(annotation: AnnotationInput, vol: Volume,
                     slice_index: int | Sequence[int] | None) -> SliceAnnotation:
    if isinstance(annotation, SliceAnnotation):
        if annotation.n_slices != vol.shape[SLICE_AXIS] or annotation.plane != slice_shape(
                vol.shape):
            raise InputError("annotation does not fit the image's slices", vol.path)
        return annotation
    if isinstance(annotation, (np.ndarray, Volume)):
        ann_vol = annotation
        if isinstance(annotation, np.ndarray):
            ann_vol = Volume(annotation, vol.spacing, vol.origin, vol.direction)
        if slice_index is not None and not isinstance(slice_index, int):
            raise InputError("one array annotation takes at most one slice index")
        return annotated_slices(ann_vol, vol, index=slice_index)
    return read_annotation(annotation, vol, index=slice_index)


def _check_options(method: str, fusion: str, adapt: float = 0.0, adapt_mode: str = "guided",
                   intensity_weight: float = INTENSITY_WEIGHT,
                   hybrid_weight: float = HYBRID_WEIGHT) -> None:
    if fusion not in FUSIONS:
        raise InputError(f"unknown fusion {fusion!r} ({', '.join(FUSIONS)})")
    if method not in METHODS:
        raise InputError(f"unknown propagation method {method!r} ({', '.join(METHODS)})")
    if adapt < 0:
        raise InputError(f"--adapt needs a number of seconds >= 0, got {adapt}")
    if adapt > 0 and method not in MODEL_METHODS:
        raise InputError(f"--adapt fine-tunes the OneSeg model; method {method!r} has none")
    if adapt_mode not in ADAPT_MODES:
        raise InputError(f"unknown adaptation mode {adapt_mode!r} ({', '.join(ADAPT_MODES)})")
    if not (math.isfinite(intensity_weight) and intensity_weight >= 0):
        raise InputError(f"--intensity-weight needs a number >= 0, got {intensity_weight}")
    if not (math.isfinite(hybrid_weight) and 0.0 <= hybrid_weight <= 1.0):
        raise InputError(f"--hybrid-weight needs a number between 0 and 1, got {hybrid_weight}")


def _progress_function(progress: bool | ProgressFunction, desc: str
                       ) -> tuple[ProgressFunction | None, Callable[[], None]]:
    """A ``(done, total)`` callback (a tqdm bar for ``True``) and a closer."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return None, lambda: None
    bar = tqdm(total=0, unit="slice", desc=desc)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _run(
    *,
    model: PathLike | OneSegModel | None,
    vol: Volume,
    annotation: SliceAnnotation,
    method: str,
    verify: bool,
    keep_largest: bool,
    anchor: bool,
    fusion: str,
    device: str,
    progress: bool | ProgressFunction,
    adapt_seconds: float = 0.0,
    adapt_mode: str = "guided",
    intensity_weight: float = INTENSITY_WEIGHT,
    hybrid_weight: float = HYBRID_WEIGHT,
) -> Propagation:
    """Propagate ``annotation`` through ``vol`` with a slice-by-slice method (OneSeg's model
    first adapted to the volume, :func:`adapt`, when ``adapt_seconds`` is positive)."""
    net = None
    if method in MODEL_METHODS:
        net = _as_model(model, device)
        if adapt_seconds > 0:
            net = adapt(model=net, image=vol, seconds=adapt_seconds, annotation=annotation,
                        mode=adapt_mode, device=device)
    with torch.inference_mode():
        propagator: Propagator
        if net is None:
            propagator = baseline_propagator(method, vol.array)
        elif method == "hybrid":
            propagator = HybridPropagator.for_volume(net, vol.array, anchor=anchor,
                                                     weight=hybrid_weight)
        else:
            propagator = OneSegPropagator(net, vol.array, anchor=anchor)
        report, close = _progress_function(progress, "propagating")
        try:
            return propagate_annotation(vol.array, annotation, propagator, fusion=fusion,
                                        verify=verify, keep_largest=keep_largest,
                                        intensity_weight=intensity_weight, progress=report)
        finally:
            close()


def propagate(
    *,
    model: PathLike | OneSegModel | None = None,
    image: PathLike | Volume,
    annotation: AnnotationInput,
    output: PathLike | None = None,
    slice_index: int | Sequence[int] | None = None,
    empty_slices: Sequence[int] = (),
    verify: bool = False,
    keep_largest: bool = True,
    anchor: bool = True,
    method: str = "oneseg",
    fusion: str = "union",
    adapt: float = 0.0,
    adapt_mode: str = "guided",
    intensity_weight: float = INTENSITY_WEIGHT,
    hybrid_weight: float = HYBRID_WEIGHT,
    device: str = "auto",
    progress: bool | ProgressFunction = False,
    preview: PathLike | None = None,
    refiner: PathLike | None = None,
) -> Volume:
    """Propagate annotated slices through the whole volume.

    Beyond the outermost annotated slices labels are propagated outwards; between two
    annotated slices they are propagated from both and the two fused (by default their union)
    (:mod:`sparseseg.oneseg.propagation`). Annotated slices are kept exactly. Each label may
    be drawn on different slices.

    Args:
        model: Model folder or loaded model (OneSeg only; the other methods need none;
            ``None``: the default model shipped in the package).
        image: Volume file or loaded volume.
        annotation: Label volume (file, :class:`Volume` or array on the image's grid) with
            1..N labeled slices; a 2D label file or array (then ``slice_index`` is required);
            several 2D files with one index each; or a :class:`SliceAnnotation`.
        output: Where to write the label volume (NIfTI in the image's geometry), or ``None``.
        slice_index: Index of a 2D annotation along the slice axis (one per 2D file).
        empty_slices: Slices annotated empty besides ``annotation``: no label there, every
            label stops (:func:`~sparseseg.oneseg.annotation.with_empty_slices`).
        verify: Sli2Vol's per-step verification clean-up.
        keep_largest: Keep the largest 3D component of each label (and every component
            touching an annotated pixel).
        anchor: OneSeg also copies from the chain's annotated slice at every step
            (``False``: from the last propagated slice only, as in the paper).
        method: ``oneseg``, ``hybrid`` (OneSeg and soft registration mixed at every step,
            :mod:`sparseseg.oneseg.hybrid`), a training-free propagator (``registration``:
            chained demons; ``copy``), or ``interpolation`` (morphological contour
            interpolation between annotated slices, at least two per label).
        fusion: How the two chains between annotated slices are joined
            (:data:`~sparseseg.oneseg.propagation.FUSIONS`).
        adapt: Seconds of test-time adaptation of the OneSeg model on this volume before
            propagating (:func:`adapt`; ``0``: none; for ``guided``, a cap on its 10 steps).
        adapt_mode: ``guided`` (by the annotation), ``norm`` (batch-norm statistics of the
            volume) or ``self`` (OneSeg's label-free loss) (:func:`adapt`).
        intensity_weight: Weight of the scan's own intensities, learned from the annotated
            slices, in the final label decision (:mod:`sparseseg.oneseg.intensity`; ``0``:
            the propagation's most probable label; not used by ``copy`` and
            ``interpolation``).
        hybrid_weight: OneSeg's share of ``hybrid``'s mix, in ``[0, 1]`` (registration's:
            the rest; :data:`~sparseseg.oneseg.hybrid.HYBRID_WEIGHT`).
        device: Where to compute.
        progress: Show a progress bar, or a callback ``progress(done, total)`` called after
            each propagated slice.
        preview: Also write a PNG of the result over the image here: a few axial slices
            (an annotated one among them) and coronal and sagittal planes
            (:func:`sparseseg.viz.preview_figure`).
        refiner: A refinement network written by :func:`refine` (``save_model``): the
            propagated labels are then refined with it as :func:`refine` refines each case
            (fine-tuned on the annotated slices, fused; seconds, no training).

    Returns:
        The label volume (written to ``output`` when given).

    Raises:
        InputError: Bad annotation or volume (see the CLI docs).
        ModelError: ``refiner`` is not a refinement network, or does not know a label of the
            annotation.
    """
    _check_options(method, fusion, adapt, adapt_mode, intensity_weight, hybrid_weight)
    if preview is not None:
        from sparseseg.viz import check_png_path  # only with a preview: viz loads scipy

        check_png_path(preview)
    vol = _as_volume(image)
    check_volume(vol.array, vol.path)
    ann = _as_annotation(annotation, vol, slice_index, empty_slices)
    refined = None if refiner is None else _load_refiner_for(refiner, ann, device)
    if method == "interpolation":
        result = interpolate(ann)
    else:
        result = _run(model=model, vol=vol, annotation=ann, method=method, verify=verify,
                      keep_largest=keep_largest, anchor=anchor, fusion=fusion, device=device,
                      progress=progress, adapt_seconds=adapt, adapt_mode=adapt_mode,
                      intensity_weight=intensity_weight, hybrid_weight=hybrid_weight).labels
    if refined is not None:
        result, _ = _refine_with(refined, vol, ann, result)
    out = vol.with_array(result)
    if output is not None:
        write_volume(output, result, vol)
    if preview is not None:
        write_preview(preview, result=result, image=vol, annotated=ann.indices[0])
    return out


@dataclass
class Suggestion:
    """What :func:`suggest` found.

    Attributes:
        slice: The slice to annotate next (0-based, along the third voxel axis).
        scores: Per slice, the suggestion score (``-inf`` on annotated slices).
        confidence: Per slice, ``1 -`` the mean doubt of its labeled or doubtful pixels (1 on
            annotated slices and where nothing was propagated): the propagation's own, also
            when a refiner scored the slices.
        labels: The propagated label volume the suggestion was read from (with a refiner,
            the refined labels, as :func:`propagate` gives them with that refiner).
        result: The full propagation record (per-slice uncertainty, disagreement, area).
        cross_checked: Whether a second method's disagreement was part of the doubt
            (``cross_check`` given and two slices holding a label).
    """

    slice: int
    scores: np.ndarray
    confidence: np.ndarray
    labels: Volume
    result: Propagation
    cross_checked: bool = False

    def table(self) -> list[dict[str, float | int | bool]]:
        """One row per slice: index, annotated, labeled pixels, confidence, score."""
        annotated = set(self.result.annotation.indices)
        return [{"slice": k, "annotated": k in annotated,
                 "labeled_pixels": int(self.result.area[k]),
                 "confidence": round(float(self.confidence[k]), 6),
                 "score": (float(self.scores[k]) if np.isfinite(self.scores[k]) else None),
                 "suggested": k == self.slice}
                for k in range(len(self.scores))]


def suggest(
    *,
    model: PathLike | OneSegModel | None = None,
    image: PathLike | Volume,
    annotation: AnnotationInput,
    slice_index: int | Sequence[int] | None = None,
    empty_slices: Sequence[int] = (),
    method: str = "oneseg",
    criterion: str = "gain",
    anchor: bool = True,
    fusion: str = "union",
    keep_largest: bool = True,
    adapt: float = 0.0,
    adapt_mode: str = "guided",
    intensity_weight: float = INTENSITY_WEIGHT,
    hybrid_weight: float = HYBRID_WEIGHT,
    device: str = "auto",
    progress: bool | ProgressFunction = False,
    confidence: PathLike | None = None,
    refiner: PathLike | None = None,
    cross_check: str | None = None,
) -> Suggestion:
    """The slice where one more annotation would help most, from the propagation itself.

    Propagates the annotation (as :func:`propagate`) and scores every other slice
    (:mod:`sparseseg.oneseg.suggestion`).

    Args:
        model: Model folder or loaded model (OneSeg only; ``None``: the default model).
        image: Volume file or loaded volume.
        annotation: The annotated slices so far (as for :func:`propagate`).
        slice_index: Index of a 2D annotation (one per 2D file).
        empty_slices: As for :func:`propagate` (never suggested).
        method: ``oneseg``, ``hybrid``, ``registration`` or ``copy`` (a propagating
            method).
        criterion: ``gain`` (default), ``uncertainty`` or ``distance``
            (:data:`~sparseseg.oneseg.suggestion.CRITERIA`).
        anchor: As for :func:`propagate`.
        fusion: As for :func:`propagate`.
        keep_largest: As for :func:`propagate`.
        adapt: As for :func:`propagate`.
        adapt_mode: As for :func:`propagate`.
        intensity_weight: As for :func:`propagate` (the labels only; the suggestion is
            scored on the propagation's own doubt).
        hybrid_weight: As for :func:`propagate`.
        device: Where to compute.
        progress: Show a progress bar, or a ``progress(done, total)`` callback.
        confidence: Also write the per-slice table (:meth:`Suggestion.table`) to this CSV.
        refiner: A refinement network written by :func:`refine` (``save_model``): the
            slices are scored by its doubt (fine-tuned on the annotated slices, against the
            propagation; :func:`~sparseseg.oneseg.refinement.network_doubt`) instead of the
            propagation's own, for a dataset whose labels are refined.

        cross_check: Also propagate by this other method (e.g. ``registration``) and add the
            pixels where the two disagree to each slice's doubt, weighted by
            :data:`~sparseseg.oneseg.suggestion.CROSS_WEIGHT`, once two slices hold a label
            (measured on LeftAtrium in docs/benchmarks.md; a registration costs about 20 s on
            a LeftAtrium volume).

    Returns:
        The suggestion, with per-slice confidence and the propagated labels.

    Raises:
        InputError: Bad annotation or volume, every slice annotated, or a method (or
            cross-check) that does not propagate.
        ModelError: ``refiner`` is not a refinement network, or does not know a label of the
            annotation.
    """
    _check_options(method, fusion, adapt, adapt_mode, intensity_weight, hybrid_weight)
    if method not in PROPAGATORS:
        raise InputError(f"suggest needs a propagating method ({', '.join(PROPAGATORS)}), "
                         f"not {method!r}")
    if criterion not in CRITERIA:
        raise InputError(f"unknown criterion {criterion!r} ({', '.join(CRITERIA)})")
    if cross_check is not None and (cross_check not in PROPAGATORS or cross_check == method):
        raise InputError(f"--cross-check needs a propagating method other than {method!r} "
                         f"({', '.join(m for m in PROPAGATORS if m != method)}), not "
                         f"{cross_check!r}")
    if confidence is not None:
        if Path(confidence).suffix.lower() != ".csv":
            raise InputError("the confidence table must be a .csv file", Path(confidence))
        if not Path(confidence).parent.is_dir():
            raise InputError("folder does not exist", Path(confidence).parent)
    vol = _as_volume(image)
    check_volume(vol.array, vol.path)
    ann = _as_annotation(annotation, vol, slice_index, empty_slices)
    if len(ann.indices) == vol.shape[SLICE_AXIS]:
        raise InputError("every slice is annotated: nothing left to suggest", vol.path)
    refined = None if refiner is None else _load_refiner_for(refiner, ann, device)
    result = _run(model=model, vol=vol, annotation=ann, method=method, verify=False,
                  keep_largest=keep_largest, anchor=anchor, fusion=fusion, device=device,
                  progress=progress, adapt_seconds=adapt, adapt_mode=adapt_mode,
                  intensity_weight=intensity_weight, hybrid_weight=hybrid_weight)
    doubt, labels = None, result.labels
    if refined is not None:
        labels, doubt = _refine_with(refined, vol, ann, result.labels, doubt=True)
    cross_checked = (cross_check is not None
                     and sum(bool(s.any()) for s in ann.slices.values()) >= CROSS_MIN_SLICES)
    if cross_checked:
        other_adapt = adapt if cross_check in MODEL_METHODS else 0.0  # registration has none
        other = _run(model=model, vol=vol, annotation=ann, method=cross_check, verify=False,
                     keep_largest=keep_largest, anchor=anchor, fusion=fusion, device=device,
                     progress=progress, adapt_seconds=other_adapt, adapt_mode=adapt_mode,
                     intensity_weight=intensity_weight, hybrid_weight=hybrid_weight)
        own = result.uncertainty + result.disagreement if doubt is None else doubt
        doubt = own + CROSS_WEIGHT * cross_check_doubt(to_slices(result.labels),
                                                       to_slices(other.labels))
    found = Suggestion(slice=suggest_slice(result, criterion, doubt),
                       scores=slice_scores(result, criterion, doubt),
                       confidence=result.confidence, labels=vol.with_array(labels),
                       result=result, cross_checked=cross_checked)
    if confidence is not None:
        _write_csv(Path(confidence), found.table())
    return found


def _load_refiner_for(folder: PathLike, ann: SliceAnnotation, device: str) -> tuple:
    """A saved refinement network, its label values, size and device, checked against the
    annotation's labels."""
    from sparseseg.oneseg.refinement import load_refiner

    dev = resolve_device(device)
    net, classes, size = load_refiner(folder, device=dev)
    _refuse_unknown_labels(classes, ann.labels(), folder, "the annotation")
    return net, classes, size, dev


def _refuse_unknown_labels(known: np.ndarray, values: Iterable[int], folder: PathLike,
                           of: str) -> None:
    """A refinement network in ``folder`` predicts only ``known``: refuse label ``values``
    beyond them (a one-line :class:`ModelError` naming the folder)."""
    unknown = sorted(set(int(v) for v in values) - set(known.tolist()))
    if unknown:
        raise ModelError(f"predicts the labels {known.tolist()}, not {unknown} of {of}",
                         Path(folder))


def _refine_with(refined: tuple, vol: Volume, ann: SliceAnnotation, labels: np.ndarray, *,
                 doubt: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """A propagation refined by a loaded refinement network, as :func:`refine` refines each
    case (fine-tuned on the annotated slices, fused; volume order, ``labels``' dtype), and
    with ``doubt`` the network's per-slice doubt
    (:func:`~sparseseg.oneseg.refinement.network_doubt`)."""
    from sparseseg.oneseg.refinement import (
        RefineConfig,
        SliceStack,
        refine_tuned_with_doubt,
        tune_to_volume,
    )

    net, classes, size, dev = refined
    config = RefineConfig(size=size)
    stack = SliceStack(to_slices(vol.array), size=size)
    prop = to_slices(labels)
    tuned = tune_to_volume(net, stack, prop, ann, classes, config=config, device=dev)
    out, per_slice = refine_tuned_with_doubt(tuned, stack, prop, ann, classes, config=config,
                                             device=dev, doubt=doubt)
    return from_slices(out), per_slice


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows to a CSV file atomically (temporary file, then rename)."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_preview(path: PathLike, *, result: np.ndarray, image: Volume, annotated: int) -> Path:
    """Write the preview PNG of a propagated label volume over its image.

    Args:
        path: Output ``.png`` file.
        result: Propagated label array on the image's grid.
        image: The image volume.
        annotated: Index of the annotated slice.

    Returns:
        The written file.
    """
    from sparseseg.viz import preview_figure, write_png

    name = image.path.name if image.path is not None else "volume"
    figure = preview_figure(result, image=image.array, spacing=image.spacing,
                            annotated=annotated, direction=image.direction,
                            title=f"{name}: propagated from slice k={annotated}")
    return write_png(path, figure)


def _one_match(matches: dict[str, list[Path]], case, folder: Path, what: str) -> Path:
    """The one file of ``folder`` matching ``case`` (``match_case_files``'s ``matches``).

    Raises:
        InputError: None matches, or several do.
    """
    found = matches.get(case.name, [])
    if not found:
        raise InputError(f"no {what} for case {case.name} (expected "
                         f"{folder / (case.name + '.nii.gz')})", case.image)
    if len(found) > 1:
        raise InputError(f"several {what}s for case {case.name}: "
                         f"{', '.join(p.name for p in found)}", folder)
    return found[0]


def propagate_batch(
    *,
    model: PathLike | OneSegModel | None = None,
    images: PathLike | Sequence[PathLike],
    annotations: PathLike,
    output: PathLike,
    verify: bool = False,
    keep_largest: bool = True,
    anchor: bool = True,
    method: str = "oneseg",
    fusion: str = "union",
    adapt: float = 0.0,
    adapt_mode: str = "guided",
    intensity_weight: float = INTENSITY_WEIGHT,
    hybrid_weight: float = HYBRID_WEIGHT,
    device: str = "auto",
    num_parts: int = 1,
    part_id: int = 0,
    skip_existing: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Propagate the annotated slices of every case of a folder; write ``OUTPUT/CASE.nii.gz``.

    Each image is matched to its annotation by case name: image ``imagesTr/la_x_0000.nii.gz``
    (or ``la_x.nii.gz``) goes with annotation ``ANNOTATIONS/la_x.nii.gz``. An annotation is a
    label volume with one or more labeled slices, as for :func:`propagate`. The model is loaded
    once. Splitting, ``--continue`` and the per-case locks are those of
    :func:`sparseseg.batch.run_batch`.

    Args:
        model: Model folder or loaded model (OneSeg only; baselines need none; ``None``: the
            default model).
        images: Folder of images, nnU-Net dataset folder (``imagesTr/``), or files.
        annotations: Folder of annotation volumes named ``CASE.nii.gz``.
        output: Output folder (created) receiving ``CASE.nii.gz``.
        verify: Sli2Vol's per-step verification clean-up.
        keep_largest: Keep the largest 3D component of each label.
        anchor: OneSeg also copies from the annotated slice at every step.
        method: ``oneseg``, ``hybrid``, ``registration``, ``copy`` or ``interpolation``.
        fusion: How chains between two annotated slices are joined (as for
            :func:`propagate`).
        adapt: Seconds of test-time adaptation on each case (as for :func:`propagate`).
        adapt_mode: As for :func:`propagate`.
        intensity_weight: As for :func:`propagate`.
        hybrid_weight: As for :func:`propagate`.
        device: Where to compute.
        num_parts: Split the cases (sorted by name) into this many parts.
        part_id: The part to process, ``0 .. num_parts - 1``.
        skip_existing: Skip cases whose output exists (resume an interrupted run).
        progress: Show a progress bar over cases.

    Returns:
        The output file of every case of the part, sorted by case name.

    Raises:
        BatchError: Some cases failed (no annotation, corrupt volume...); the others are
            written. ``error.report`` says which and why.
        SparsesegError: Bad arguments, unusable model, or an output that cannot be written;
            nothing more is done.
    """
    from sparseseg.batch import BatchError, match_case_files, run_batch, validate_parts

    validate_parts(num_parts, part_id)
    _check_options(method, fusion, adapt, adapt_mode, intensity_weight, hybrid_weight)
    cases = find_cases(images if not isinstance(images, (str, Path)) else [images])
    annotations, output = Path(annotations), Path(output)
    if output.exists() and annotations.exists() and output.samefile(annotations):
        raise InputError("is also the annotation folder; the outputs would replace the "
                         "annotations", output)
    matches, unmatched = match_case_files([c.name for c in cases], annotations)
    if unmatched:
        shown = ", ".join(p.name for p in unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        log.warning("%s: %d annotation file(s) match no image: %s", annotations,
                    len(unmatched), shown)
    net = _as_model(model, device) if method in MODEL_METHODS else None

    def work(case) -> Volume:
        found = _one_match(matches, case, annotations, "annotation")
        return propagate(model=net, image=case.image, annotation=found, verify=verify,
                         keep_largest=keep_largest, anchor=anchor, method=method,
                         fusion=fusion, adapt=adapt, adapt_mode=adapt_mode,
                         intensity_weight=intensity_weight, hybrid_weight=hybrid_weight,
                         device=device)

    def save(result: Volume, target: Path) -> None:
        write_volume(target, result.array, result)

    report = run_batch(cases, output=output, work=work, save=save, num_parts=num_parts,
                       part_id=part_id, skip_existing=skip_existing, progress=progress,
                       desc="oneseg propagate")
    if report.failed:
        raise BatchError(report)
    return [report.outputs[name] for name in sorted(report.outputs)]


class _LabelFile:
    """A label volume on disk, read on demand onto its image's grid (checked when read,
    :func:`check_on_image_grid`)."""

    def __init__(self, path: Path, image: Volume) -> None:
        self.path = path
        # The image's grid without its voxels: a zero-size broadcast of its shape.
        self.grid = image.with_array(np.broadcast_to(np.uint8(0), image.shape))

    def read(self) -> Volume:
        from sparseseg.io.reader import read_label

        lab = read_label(self.path)
        check_on_image_grid(lab, self.grid)
        return self.grid.with_array(lab.array)


class _SlicesOf(Sequence):
    """The label files' slices, ``(N, H, W)``, each read when asked for (not kept)."""

    def __init__(self, files: list[_LabelFile]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return to_slices(self.files[i].read().array)


REFINE_FLAGS = ("steps", "max_time", "finetune_steps", "rounds", "propagation_weight")
"""RefineConfig fields that ``sparseseg oneseg refine`` sets by a flag of the same name."""


def _flag_named(message: str, fields: Sequence[str]) -> str:
    """``message`` with a leading config field name written as its CLI flag
    (``finetune_steps must ...`` -> ``--finetune-steps must ...``)."""
    name, _, rest = message.partition(" ")
    return f"--{name.replace('_', '-')} {rest}" if name in fields else message


def refine(
    *,
    images: PathLike | Sequence[PathLike],
    annotations: PathLike,
    labels: PathLike,
    output: PathLike,
    steps: int = 4000,
    max_time: float | None = None,
    finetune_steps: int = 50,
    rounds: int = 1,
    sigma: float = 4.0,
    propagation_weight: float = 0.25,
    model: PathLike | None = None,
    save_model: PathLike | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Refine a whole dataset's propagated labels with a network trained on all of them.

    Every case needs its annotated slices and its propagated labels (from
    :func:`propagate_batch`, any method, or corrected by hand). One 2D network is trained on
    all the propagated labels, then each case's labels are refined: the network, fine-tuned
    on the case's annotated slices, is fused with them (:mod:`sparseseg.oneseg.refinement`).
    Annotated slices are kept exactly. Every input is read and checked before training, so a
    bad file stops the run before anything is written.

    Args:
        images: Folder of images, nnU-Net dataset folder (``imagesTr/``), or files.
        annotations: Folder of annotation volumes ``CASE.nii.gz`` (as for
            :func:`propagate_batch`).
        labels: Folder of propagated label volumes ``CASE.nii.gz`` on the images' grids.
        output: Output folder (created) receiving the refined ``CASE.nii.gz``, in each image's
            geometry; it must not be the annotation or label folder.
        steps: Training steps (batches of 16 slices).
        max_time: Stop training after this many minutes (``None``: no limit; with a limit
            the result depends on the machine's speed).
        finetune_steps: Steps of fine-tuning on each case's annotated slices.
        rounds: Training rounds; each after the first goes on training the network on every
            case's refined labels (``steps`` more each).
        sigma: In-plane smoothing (pixels) of the propagated labels in the fusion.
        propagation_weight: Weight of the propagated labels beside the network in the
            fusion (0: the fine-tuned network alone decides outside the annotated slices).
        model: A network written by an earlier run's ``save_model``: the cases are refined
            with it and nothing is trained (``steps``, ``max_time`` and ``rounds`` unused),
            e.g. after slices were added to a few cases. It must know every label value.
        save_model: Also write the trained network to this folder (``model.safetensors`` +
            ``config.json``).
        seed: Seed of the network and of the slices drawn.
        device: Where to compute.
        progress: Show progress bars.

    Returns:
        The written files, sorted by case name.

    Raises:
        InputError: A missing, unreadable or mismatched input (named), or an output folder
            that is an input folder; nothing is written.
        ModelError: ``model`` is not a refinement network, or does not know a label value
            of the data.
    """
    from sparseseg.batch import match_case_files, output_path, prepare_output
    from sparseseg.io.reader import read_label
    from sparseseg.oneseg.refinement import (
        RefineConfig,
        SliceStack,
        load_refiner,
        refine_volume,
        save_refiner,
        train_rounds,
    )

    if model is not None and save_model is not None:
        raise InputError("give a saved network to refine with (model) or a folder to save "
                         "the trained one in (save_model), not both")
    dev = resolve_device(device)
    net = known = None
    size = RefineConfig.size
    if model is not None:
        net, known, size = load_refiner(model, device=dev)
    try:
        config = RefineConfig(steps=steps, max_time=max_time, finetune_steps=finetune_steps,
                              rounds=rounds, sigma=sigma,
                              propagation_weight=propagation_weight, size=size, seed=seed)
    except ValueError as exc:
        raise InputError(_flag_named(str(exc), REFINE_FLAGS)) from None
    annotations, labels, output = Path(annotations), Path(labels), Path(output)
    for folder, what in ((annotations, "annotation"), (labels, "label")):
        if output.exists() and folder.exists() and output.samefile(folder):
            raise InputError(f"is also the {what} folder; the outputs would replace the "
                             f"{what}s", output)
    cases = find_cases(images if not isinstance(images, (str, Path)) else [images])
    ann_matches, _ = match_case_files([c.name for c in cases], annotations)
    lab_matches, _ = match_case_files([c.name for c in cases], labels)
    # Every file is read and checked here; what is kept per case is its annotation, its
    # network-sized slices and where its labels are: the full-size labels are read again
    # when needed, so a large dataset is not held in memory.
    prepared = []
    values = {0}
    for case in tqdm(cases, desc="oneseg refine: reading", disable=not progress, leave=False):
        ann_file = _one_match(ann_matches, case, annotations, "annotation")
        lab_file = _one_match(lab_matches, case, labels, "label volume")
        vol = read_volume(case.image)
        check_volume(vol.array, vol.path)
        ann = read_annotation(ann_file, vol)
        lab = read_label(lab_file)
        check_on_image_grid(lab, vol)
        values.update(int(v) for v in np.unique(lab.array))
        values.update(ann.labels())
        stack = SliceStack(to_slices(vol.array), size=config.size)
        prepared.append((case, _LabelFile(lab_file, vol), ann, stack))
    classes = np.array(sorted(values))
    if known is not None:
        _refuse_unknown_labels(known, classes.tolist(), model, "the data")
        classes = known
    target = prepare_output(output)
    if net is None:
        bar = tqdm(total=config.steps * config.rounds, desc="oneseg refine: training",
                   disable=not progress)
        try:
            net = train_rounds([p[3] for p in prepared], _SlicesOf([p[1] for p in prepared]),
                               [p[2] for p in prepared], classes, config=config, device=dev,
                               progress=lambda done, total: bar.update(1))
        finally:
            bar.close()
        if save_model is not None:
            save_refiner(save_model, net, classes=classes, size=config.size)
    written = []
    for case, file, ann, stack in tqdm(prepared, desc="oneseg refine: refining",
                                       disable=not progress):
        lab = file.read()
        refined = refine_volume(net, stack, to_slices(lab.array), ann, classes, config=config,
                                device=dev)
        written.append(write_volume(output_path(target, case.name),
                                    from_slices(refined), lab))
    return sorted(written)
