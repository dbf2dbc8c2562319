"""Score predicted label volumes against reference label volumes, files or folders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.dataset import find_cases
from sparseseg.io.formats import case_name, is_volume_file
from sparseseg.io.reader import read_label, read_volume
from sparseseg.io.volume import Volume
from sparseseg.metrics import evaluate_labels, mean_metrics
from sparseseg.viz import check_png_path, comparison_figure, write_png

log = logging.getLogger(__name__)

Scores = dict[int, dict[str, float]]


def evaluate_files(
    *,
    pred: str | Path,
    truth: str | Path,
    labels: Sequence[int] | None = None,
    png: str | Path | None = None,
    image: str | Path | None = None,
) -> Scores:
    """CHAOS metrics per label of one predicted label volume against its reference.

    Args:
        pred: Predicted label volume.
        truth: Reference label volume on the same grid.
        labels: Label values to score (default: those in the reference).
        png: Also write a picture of prediction against reference here (see
            :func:`sparseseg.viz.comparison_figure`).
        image: Intensity volume on the same grid, drawn in grey under the picture's labels.

    Returns:
        ``{label: {"dice", "ravd", "assd", "mssd"}}``, distances in mm.

    Raises:
        InputError: A file is unreadable or not a label map, the grids differ, or the picture
            cannot be written.
    """
    if png is not None:
        check_png_path(png)
    p, t = read_label(pred), read_label(truth)
    if p.shape != t.shape:
        raise InputError(f"shape {p.shape} differs from reference {t.shape} ({truth})", pred)
    if not p.same_geometry(t):
        raise InputError(
            f"geometry (spacing/origin/direction) differs from reference {truth}", pred
        )
    scores = evaluate_labels(p.array, t.array, spacing=t.spacing, labels=labels)
    if png is not None:
        write_comparison(png, pred=p.array, truth=t, labels=labels, image=image,
                         title=f"{Path(pred).name} vs {Path(truth).name}")
    return scores


def write_comparison(
    png: str | Path,
    *,
    pred: np.ndarray,
    truth: Volume,
    labels: Sequence[int] | None = None,
    image: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Write the picture of a prediction against its reference (and image, when given).

    Args:
        png: Output ``.png`` file.
        pred: Predicted label array on the reference's grid.
        truth: Reference label volume.
        labels: Only these label values.
        image: Intensity volume file on the same grid.
        title: A line above the picture.

    Returns:
        The written file.

    Raises:
        InputError: The image is unreadable or on another grid, or the file cannot be written.
    """
    intensities = None
    if image is not None:
        vol = read_volume(image)
        if vol.shape != truth.shape:
            raise InputError(f"shape {vol.shape} differs from reference {truth.shape}", image)
        intensities = vol.array
    figure = comparison_figure(pred, truth.array, image=intensities, spacing=truth.spacing,
                               labels=labels, title=title, direction=truth.direction)
    return write_png(png, figure)


def _label_files(folder: Path) -> dict[str, Path]:
    if (folder / "labelsTr").is_dir():
        folder = folder / "labelsTr"
    return {case_name(p): p for p in sorted(folder.iterdir()) if is_volume_file(p)}


def _image_files(images: Path) -> dict[str, Path]:
    """Image file of each case name in a folder or dataset folder (``imagesTr/*_0000``)."""
    if not images.is_dir():
        problem = "is not a folder" if images.exists() else "no such folder"
        raise InputError(f"{problem} (with folders of predictions, images are a folder too)",
                         images)
    return {case.name: case.image for case in find_cases(images)}


def evaluate_folders(
    *,
    pred: str | Path,
    truth: str | Path,
    labels: Sequence[int] | None = None,
    png: str | Path | None = None,
    images: str | Path | None = None,
) -> dict[str, Scores]:
    """Score every prediction in a folder against the reference of the same case name.

    Args:
        pred: Folder of predicted label volumes.
        truth: Folder of reference label volumes, or a dataset folder (its ``labelsTr/``).
        labels: Label values to score (default: those in each reference).
        png: Also write one picture per case, ``png/CASE.png`` (the folder is created if its
            parent exists).
        images: Folder (or dataset folder) of the intensity volumes, matched by case name, drawn
            under the pictures' labels.

    Returns:
        ``{case: {label: metrics}}``, in case-name order. References without a prediction
        get the worst scores (an empty prediction), so a missing output is never hidden.

    Raises:
        InputError: A folder is missing or no case names match.
    """
    pred, truth = Path(pred), Path(truth)
    for folder in (pred, truth):
        if not folder.is_dir():
            raise InputError("no such folder", folder)
    preds, truths = _label_files(pred), _label_files(truth)
    common = sorted(set(truths) & set(preds))
    if not common:
        raise InputError(f"no prediction matches a reference case name in {truth}", pred)
    image_files = _image_files(Path(images)) if images is not None else {}
    if png is not None:
        png = _picture_folder(Path(png))
    results: dict[str, Scores] = {}
    for name in sorted(truths):
        picture = None if png is None else png / f"{name}.png"
        image = image_files.get(name)
        if images is not None and image is None:
            log.warning("%s: no image for case %s; its picture has no grey background",
                        images, name)
        if name in preds:
            results[name] = evaluate_files(pred=preds[name], truth=truths[name], labels=labels,
                                           png=picture, image=image)
        else:
            ref = read_label(truths[name])
            results[name] = evaluate_labels(
                ref.array * 0, ref.array, spacing=ref.spacing, labels=labels
            )
            if picture is not None:
                write_comparison(picture, pred=ref.array * 0, truth=ref, labels=labels,
                                 image=image, title=f"{name}: no prediction")
    return results


def _picture_folder(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise InputError("exists and is not a folder (in folder mode --png is a folder)", folder)
    parent = folder.parent if str(folder.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("parent folder does not exist", folder)
    folder.mkdir(exist_ok=True)
    return folder


def summarise(results: dict[str, Scores]) -> Scores:
    """Mean metrics per label over cases."""
    labels = sorted({v for res in results.values() for v in res})
    return {v: mean_metrics(res[v] for res in results.values() if v in res) for v in labels}
