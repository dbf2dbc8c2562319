"""Score predicted label volumes against reference label volumes, files or folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.formats import case_name, is_volume_file
from sparseseg.io.reader import read_label
from sparseseg.metrics import evaluate_labels, mean_metrics

Scores = dict[int, dict[str, float]]


def evaluate_files(
    *, pred: str | Path, truth: str | Path, labels: Sequence[int] | None = None
) -> Scores:
    """CHAOS metrics per label of one predicted label volume against its reference.

    Args:
        pred: Predicted label volume.
        truth: Reference label volume on the same grid.
        labels: Label values to score (default: those in the reference).

    Returns:
        ``{label: {"dice", "ravd", "assd", "mssd"}}``, distances in mm.

    Raises:
        InputError: A file is unreadable or not a label map, or the grids differ.
    """
    p, t = read_label(pred), read_label(truth)
    if p.shape != t.shape:
        raise InputError(f"shape {p.shape} differs from reference {t.shape} ({truth})", pred)
    if not p.same_geometry(t):
        raise InputError(
            f"geometry (spacing/origin/direction) differs from reference {truth}", pred
        )
    return evaluate_labels(p.array, t.array, spacing=t.spacing, labels=labels)


def _label_files(folder: Path) -> dict[str, Path]:
    if (folder / "labelsTr").is_dir():
        folder = folder / "labelsTr"
    return {case_name(p): p for p in sorted(folder.iterdir()) if is_volume_file(p)}


def evaluate_folders(
    *, pred: str | Path, truth: str | Path, labels: Sequence[int] | None = None
) -> dict[str, Scores]:
    """Score every prediction in a folder against the reference of the same case name.

    Args:
        pred: Folder of predicted label volumes.
        truth: Folder of reference label volumes, or a dataset folder (its ``labelsTr/``).
        labels: Label values to score (default: those in each reference).

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
    results: dict[str, Scores] = {}
    for name in sorted(truths):
        if name in preds:
            results[name] = evaluate_files(pred=preds[name], truth=truths[name], labels=labels)
        else:
            ref = read_label(truths[name])
            results[name] = evaluate_labels(
                ref.array * 0, ref.array, spacing=ref.spacing, labels=labels
            )
    return results


def summarise(results: dict[str, Scores]) -> Scores:
    """Mean metrics per label over cases."""
    labels = sorted({v for res in results.values() for v in res})
    return {v: mean_metrics(res[v] for res in results.values() if v in res) for v in labels}
