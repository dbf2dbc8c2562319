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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sparseseg.device import resolve_device
from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS
from sparseseg.io.dataset import find_cases
from sparseseg.io.reader import read_volume
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.oneseg.annotation import annotated_slice, read_annotation
from sparseseg.oneseg.baselines import METHODS, baseline_step
from sparseseg.oneseg.model import OneSegModel, check_volume
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.preprocess import volume_to_slices
from sparseseg.oneseg.propagation import chain_propagate, oneseg_step
from sparseseg.oneseg.screening import most_representative
from sparseseg.oneseg.training import OneSegTrainer, TrainConfig, TrainState

log = logging.getLogger(__name__)

PathLike = str | Path


def _as_volume(image: PathLike | Volume) -> Volume:
    return image if isinstance(image, Volume) else read_volume(image)


def _as_model(model: PathLike | OneSegModel, device: str) -> OneSegModel:
    if isinstance(model, OneSegModel):
        return model
    return OneSegModel.load(model, device=resolve_device(device))


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
    scheduled_sampling: bool = True,
    cycle: bool = True,
    network: NetworkConfig | None = None,
    training: TrainConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train OneSeg self-supervised on unlabeled volumes and save a model folder.

    Args:
        images: Volume files, folders of volumes, or dataset folders (``imagesTr/`` only;
            labels are never read).
        output: Model folder to write (``config.json`` + ``model.safetensors``).
        epochs: Training epochs (learning rate halves after each).
        max_time: Stop after this many minutes and save the model as it is.
        size: In-plane size slices are resized to (paper: 256; 128 is much faster on a CPU).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: Random seed (same seed, same data, CPU: same model).
        bottleneck: ``gabor`` (OneSeg), ``edge`` (Sli2Vol) or ``intensity`` (ablation).
        pairs: ``screened`` (OneSeg) or ``random`` (ablation).
        scheduled_sampling: Use scheduled sampling (ablation: False).
        cycle: Use cycle consistency (ablation: False).
        network: Full network settings (overrides ``bottleneck``).
        training: Full training settings (overrides the simple arguments above).
        progress: Show a progress bar.

    Returns:
        The model folder.

    Raises:
        InputError: No usable volume among the inputs, or an unreadable one.
    """
    dev = resolve_device(device)
    net_cfg = network or NetworkConfig(bottleneck=bottleneck)
    cfg = training or TrainConfig(
        epochs=epochs,
        max_time=max_time,
        size=size,
        seed=seed,
        pairs=pairs,
        scheduled_sampling=scheduled_sampling,
        cycle=cycle,
    )
    if cfg.pairs not in ("screened", "random"):
        raise InputError(f"unknown pair mode {cfg.pairs!r} (screened or random)")
    cases = find_cases(images if not isinstance(images, (str, Path)) else [images])
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
        "training OneSeg on %d volumes (%d slices) on %s",
        len(volumes),
        sum(len(v) for v in volumes),
        dev,
    )
    trainer = OneSegTrainer(volumes, network=net_cfg, config=cfg, device=dev)
    bar = tqdm(
        total=trainer.steps_per_epoch * cfg.epochs,
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
        net = trainer.fit(report)
    finally:
        bar.close()
    model = OneSegModel(
        net,
        size=cfg.size,
        device=dev,
        extra={"training": trainer.record(), "n_volumes": len(volumes)},
    )
    path = model.save(output)
    log.info("model saved to %s", path)
    return path


def select(*, model: PathLike | OneSegModel, image: PathLike | Volume, device: str = "auto") -> int:
    """The slice to annotate: the volume's most representative slice (Eq. 5-7).

    Args:
        model: Model folder or loaded model.
        image: Volume file or loaded volume.
        device: Where to compute.

    Returns:
        0-based index along the slice axis (the third voxel axis).
    """
    net = _as_model(model, device)
    vol = _as_volume(image)
    check_volume(vol.array, vol.path)
    slices = net.slice_tensors(vol.array)
    pooled = net.pooled(net.features(slices))
    # Slices with almost no structure (outside the body) may not win.
    spread = slices.flatten(1).std(dim=1).cpu().numpy()
    candidates = spread > 0.25 * spread.max() if spread.max() > 0 else None
    return most_representative(pooled, candidates=candidates)


def propagate(
    *,
    model: PathLike | OneSegModel | None = None,
    image: PathLike | Volume,
    annotation: PathLike | Volume | np.ndarray,
    output: PathLike | None = None,
    slice_index: int | None = None,
    verify: bool = False,
    keep_largest: bool = True,
    method: str = "oneseg",
    device: str = "auto",
    progress: bool = False,
) -> Volume:
    """Propagate one annotated slice through the whole volume.

    Args:
        model: Model folder or loaded model (OneSeg only; baselines need none).
        image: Volume file or loaded volume.
        annotation: Label volume with exactly one labeled slice, a 2D label file or array
            (then ``slice_index`` is required).
        output: Where to write the label volume (NIfTI in the image's geometry), or ``None``.
        slice_index: Index of the annotated slice along the slice axis.
        verify: Sli2Vol's per-step verification clean-up.
        keep_largest: Keep the largest 3D component of each label.
        method: ``oneseg``, or a training-free baseline: ``registration`` (chained demons)
            or ``copy``.
        device: Where to compute.
        progress: Show a progress bar.

    Returns:
        The label volume (written to ``output`` when given).

    Raises:
        InputError: Bad annotation or volume (see the CLI docs).
    """
    if method not in METHODS:
        raise InputError(f"unknown propagation method {method!r} ({', '.join(METHODS)})")
    if method == "oneseg" and model is None:
        raise InputError("OneSeg propagation needs a model folder (-m MODEL_DIR)")
    vol = _as_volume(image)
    check_volume(vol.array, vol.path)
    net = _as_model(model, device) if method == "oneseg" else None
    if isinstance(annotation, (np.ndarray, Volume)):
        ann_vol = annotation
        if isinstance(annotation, np.ndarray):
            ann_vol = Volume(annotation, vol.spacing, vol.origin, vol.direction)
        index, labels = annotated_slice(ann_vol, vol, index=slice_index)
    else:
        index, labels = read_annotation(annotation, vol, index=slice_index)
    n = vol.shape[SLICE_AXIS]
    with tqdm(total=n, disable=not progress, unit="slice", desc="propagating") as bar:

        def tick(done: int) -> None:
            bar.n = done
            bar.refresh()

        with torch.inference_mode():
            if net is None:
                step = baseline_step(method, vol.array)
            else:
                classes = np.unique(np.concatenate([[0], np.unique(labels)])).astype(np.int64)
                step = oneseg_step(net, vol.array, classes)
            result = chain_propagate(vol.array, labels, index, step, verify=verify,
                                     keep_largest=keep_largest, progress=tick)
    out = vol.with_array(result)
    if output is not None:
        write_volume(output, result, vol)
    return out

