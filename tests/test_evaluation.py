"""Scoring label files and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparseseg.errors import InputError
from sparseseg.evaluation import evaluate_files, evaluate_folders, summarise
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.metrics import evaluate_labels


def perturbed(label: Volume, shift: int) -> np.ndarray:
    return np.roll(label.array, shift, axis=0)


def _shifted_dice(label: Volume, shift: int) -> dict[int, float]:
    """Dice of each label of the phantom against itself shifted, counted voxel by voxel."""
    moved = perturbed(label, shift)
    out = {}
    for v in (1, 2, 3, 4):
        a, b = moved == v, label.array == v
        out[v] = 2 * int((a & b).sum()) / (int(a.sum()) + int(b.sum()))
    return out


def test_evaluate_files(tmp_path: Path, tiny_phantom, tiny_files) -> None:
    _, label = tiny_phantom
    _, truth = tiny_files
    pred = write_volume(tmp_path / "pred.nii.gz", perturbed(label, 1), label)
    scores = evaluate_files(pred=pred, truth=truth)
    want = evaluate_labels(perturbed(label, 1), label.array, spacing=label.spacing)
    assert list(scores) == list(want)
    for v in want:
        assert scores[v] == pytest.approx(want[v])
    assert sorted(scores) == [1, 2, 3, 4]
    assert {v: s["dice"] for v, s in scores.items()} == _shifted_dice(label, 1)
    assert all(0 < s["dice"] < 1 for s in scores.values())  # the shift is not a no-op
    assert list(evaluate_files(pred=pred, truth=truth, labels=[2, 4])) == [2, 4]
    perfect = evaluate_files(pred=truth, truth=truth)
    assert all(s["dice"] == 1.0 and s["assd"] == 0.0 for s in perfect.values())


def test_shape_mismatch(tmp_path: Path, tiny_phantom, tiny_files) -> None:
    _, label = tiny_phantom
    _, truth = tiny_files
    small = Volume(label.array[:-1], label.spacing, label.origin, label.direction)
    pred = write_volume(tmp_path / "small.nii.gz", small.array, small)
    with pytest.raises(InputError, match="shape") as exc:
        evaluate_files(pred=pred, truth=truth)
    assert str(pred) in str(exc.value)


@pytest.mark.parametrize("change", ["spacing", "origin", "direction"])
def test_geometry_mismatch(tmp_path: Path, tiny_phantom, tiny_files, change: str) -> None:
    _, label = tiny_phantom
    _, truth = tiny_files
    spacing, origin, direction = label.spacing, label.origin, label.direction
    if change == "spacing":
        spacing = (spacing[0], spacing[1], spacing[2] * 2)
    elif change == "origin":
        origin = (0.0, 0.0, 5.0)
    else:
        direction = np.diag([1.0, -1.0, -1.0])
    other = Volume(label.array, spacing, origin, direction)
    pred = write_volume(tmp_path / "moved.nii.gz", label.array, other)
    with pytest.raises(InputError, match="geometry") as exc:
        evaluate_files(pred=pred, truth=truth)
    assert str(pred) in str(exc.value)


def _folders(tmp_path: Path, label: Volume) -> tuple[Path, Path]:
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth" / "labelsTr").mkdir(parents=True)
    for i, name in enumerate(["a", "b", "c"]):
        write_volume(tmp_path / "truth" / "labelsTr" / f"{name}.nii.gz", label.array, label)
        if name != "c":
            write_volume(tmp_path / "pred" / f"{name}.nii.gz", perturbed(label, i), label)
    return tmp_path / "pred", tmp_path / "truth"


def test_evaluate_folders(tmp_path: Path, tiny_phantom) -> None:
    _, label = tiny_phantom
    pred, truth = _folders(tmp_path, label)
    results = evaluate_folders(pred=pred, truth=truth)
    assert list(results) == ["a", "b", "c"]
    assert all(s["dice"] == 1.0 for s in results["a"].values())
    assert {v: s["dice"] for v, s in results["b"].items()} == _shifted_dice(label, 1)
    # A reference without a prediction is scored as an empty prediction, not skipped.
    assert all(s["dice"] == 0.0 and s["ravd"] == 100.0 for s in results["c"].values())
    mean = summarise(results)
    for v in mean:
        want = np.mean([results[c][v]["dice"] for c in results])
        assert mean[v]["dice"] == pytest.approx(want)
    only = evaluate_folders(pred=pred, truth=truth / "labelsTr", labels=[1])
    assert all(list(res) == [1] for res in only.values())


def test_folder_errors(tmp_path: Path, tiny_phantom) -> None:
    _, label = tiny_phantom
    pred, truth = _folders(tmp_path, label)
    with pytest.raises(InputError, match="no such folder"):
        evaluate_folders(pred=tmp_path / "nope", truth=truth)
    other = tmp_path / "other"
    other.mkdir()
    write_volume(other / "zzz.nii.gz", label.array, label)
    with pytest.raises(InputError, match="no prediction matches"):
        evaluate_folders(pred=other, truth=truth)
