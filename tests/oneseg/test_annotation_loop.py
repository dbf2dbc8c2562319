"""The annotation loop: several annotated slices, interpolation, and the suggested next slice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sparseseg import oneseg
from sparseseg.cli.main import main
from sparseseg.errors import InputError
from sparseseg.io import Volume, read_label, read_volume, write_volume
from sparseseg.metrics import dice
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg_test_utils import real_case


def _slices(truth: np.ndarray, ks: list[int], value: int | None = None) -> np.ndarray:
    """``truth`` (or its ``value`` mask) on slices ``ks`` only."""
    lab = truth if value is None else (truth == value).astype(truth.dtype)
    ann = np.zeros_like(lab)
    for k in ks:
        ann[:, :, k] = lab[:, :, k]
    return ann


def _extent(mask: np.ndarray) -> tuple[int, int]:
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    return int(ks[0]), int(ks[-1])


@pytest.fixture(scope="module")
def phantom(phantom_folder: Path) -> tuple[Volume, np.ndarray]:
    return read_volume(phantom_folder / "image.nii.gz"), read_label(
        phantom_folder / "label.nii.gz").array


def test_two_slices_beat_one_and_stay_exact(tiny_model: Path, phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    q1, q3 = lo + (hi - lo) // 4, hi - (hi - lo) // 4
    one = oneseg.propagate(model=tiny_model, image=image, annotation=_slices(truth, [q1], 1),
                           device="cpu").array
    two = oneseg.propagate(model=tiny_model, image=image,
                           annotation=_slices(truth, [q1, q3], 1), device="cpu").array
    for k in (q1, q3):
        assert (two[:, :, k] == (truth[:, :, k] == 1)).all()
    assert dice(two == 1, truth == 1) > dice(one == 1, truth == 1)


@pytest.mark.parametrize("method", ["registration", "copy"])
def test_baselines_fuse_two_slices(phantom, method: str) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    q1, q3 = lo + (hi - lo) // 4, hi - (hi - lo) // 4
    two = oneseg.propagate(image=image, annotation=_slices(truth, [q1, q3], 1),
                           method=method).array
    one = oneseg.propagate(image=image, annotation=_slices(truth, [q1], 1), method=method).array
    assert dice(two == 1, truth == 1) > dice(one == 1, truth == 1)


def test_organs_drawn_on_different_slices(tiny_model: Path, phantom) -> None:
    """The liver on two slices and the spleen on another: each organ is propagated from its
    own slices (as if drawn alone), not cut off where only the other one is drawn."""
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    slo, shi = _extent(truth == 2)
    liver = _slices(truth, [lo + (hi - lo) // 4, hi - (hi - lo) // 4], 1)
    spleen = 2 * _slices(truth, [(slo + shi) // 2], 2)
    both = oneseg.propagate(model=tiny_model, image=image, annotation=np.maximum(liver, spleen),
                            device="cpu").array
    alone = {v: oneseg.propagate(model=tiny_model, image=image, annotation=a,
                                 device="cpu").array for v, a in ((1, liver), (2, spleen))}
    for v in (1, 2):
        assert dice(both == v, alone[v] == v) > 0.97
    k = (slo + shi) // 2
    assert ((both[:, :, k] == 2) == (spleen[:, :, k] == 2)).all()


def test_interpolation_fills_between_and_not_beyond(phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    ks = [lo + 2, (lo + hi) // 2, hi - 2]
    out = oneseg.propagate(image=image, annotation=_slices(truth, ks, 1),
                           method="interpolation").array
    for k in ks:
        assert (out[:, :, k] == (truth[:, :, k] == 1)).all()
    assert not out[:, :, : lo + 2].any() and not out[:, :, hi - 1:].any()
    inside = slice(lo + 2, hi - 1)
    assert dice(out[:, :, inside] == 1, truth[:, :, inside] == 1) > 0.8


def test_interpolation_needs_two_slices_per_label(phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    with pytest.raises(InputError, match="label\\(s\\) 1 on 1"):
        oneseg.propagate(image=image, annotation=_slices(truth, [lo], 1),
                         method="interpolation")


def test_suggest_points_inside_the_organ_away_from_the_annotation(tiny_model: Path,
                                                                 phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0 = (lo + hi) // 2
    found = oneseg.suggest(model=tiny_model, image=image, annotation=_slices(truth, [k0], 1),
                           device="cpu")
    assert found.slice != k0 and found.labels.array[:, :, found.slice].any()
    assert found.scores[k0] == -np.inf and found.confidence[k0] == 1.0
    # The score is the doubt of the propagated outline: the chosen slice has the most.
    assert found.scores[found.slice] == np.nanmax(found.scores[np.isfinite(found.scores)])
    assert found.scores[found.slice] > found.scores[k0 + 1]
    # Adding the suggested slice and suggesting again never repeats an annotated slice.
    ann2 = found.result.annotation.with_slice(found.slice,
                                              (truth[:, :, found.slice] == 1).astype(np.uint8))
    again = oneseg.suggest(model=tiny_model, image=image, annotation=ann2, device="cpu")
    assert again.slice not in (k0, found.slice)


def test_hard_propagators_suggest_the_farthest_labeled_slice(phantom) -> None:
    """Copy and registration give one-hot labels: no doubt outside two annotated slices, so
    the suggestion falls back to the labeled slice farthest from the annotation."""
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0 = (lo + hi) // 2
    found = oneseg.suggest(image=image, annotation=_slices(truth, [k0], 1), method="copy")
    labeled = np.flatnonzero(found.labels.array.any(axis=(0, 1)))
    far = labeled[np.argmax(np.abs(labeled - k0))]
    assert found.slice == far


def test_suggest_distance_criterion_is_uniform_spacing(phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    ann = SliceAnnotation({lo: (truth[:, :, lo] == 1).astype(np.uint8)}, image.shape[2])
    found = oneseg.suggest(image=image, annotation=ann, method="copy", criterion="distance")
    # Copy carries the label to every slice above: the farthest of those is the last slice.
    assert found.slice == image.shape[2] - 1


def test_suggest_cli_json_and_confidence_table(tiny_model: Path, phantom_folder: Path,
                                               phantom, tmp_path: Path, capsys) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0 = (lo + hi) // 2
    write_volume(tmp_path / "ann.nii.gz", _slices(truth, [k0], 1), image)
    table = tmp_path / "confidence.csv"
    argv = ["-q", "oneseg", "suggest", "-m", str(tiny_model), "-i",
            str(phantom_folder / "image.nii.gz"), "-a", str(tmp_path / "ann.nii.gz"),
            "--json", "--confidence", str(table), "--device", "cpu"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["annotated"] == [k0] and printed["slice"] != k0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == image.shape[2]
    assert [r["suggested"] for r in rows].count("True") == 1
    assert rows[printed["slice"]]["suggested"] == "True"
    assert rows[k0]["annotated"] == "True" and float(rows[k0]["confidence"]) == 1.0
    assert float(rows[printed["slice"]]["confidence"]) == pytest.approx(
        printed["confidence"], abs=1e-4)
    api = oneseg.suggest(model=tiny_model, image=image, annotation=tmp_path / "ann.nii.gz",
                         device="cpu")
    assert api.slice == printed["slice"]


def test_propagate_cli_two_2d_slices(tiny_model: Path, phantom_folder: Path, phantom,
                                     tmp_path: Path) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    ks = [lo + (hi - lo) // 4, hi - (hi - lo) // 4]
    files = []
    for k in ks:
        arr = (truth[:, :, k] == 1).astype(np.uint8)
        files.append(tmp_path / f"slice{k}.nii.gz")
        write_volume(files[-1], arr, Volume(arr, (1.0, 1.0), (0.0, 0.0), np.eye(2)))
    out = tmp_path / "out.nii.gz"
    argv = ["-q", "oneseg", "propagate", "-m", str(tiny_model), "-i",
            str(phantom_folder / "image.nii.gz"), "-a", *map(str, files), "--slice",
            str(ks[0]), "--slice", str(ks[1]), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 0
    got = read_label(out)
    assert got.same_geometry(image)
    want = oneseg.propagate(model=tiny_model, image=image, annotation=_slices(truth, ks, 1),
                            device="cpu").array
    assert (got.array == want).all()


def test_progress_callback_counts_slices(phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    seen: list[tuple[int, int]] = []
    oneseg.propagate(image=image, annotation=_slices(truth, [lo + 2, hi - 2], 1),
                     method="copy", progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]


def test_real_leftatrium_more_slices_help() -> None:
    """On a real LGE-MRI volume (cropped around the atrium to keep registration fast) a second
    annotated slice helps registration between the two, and three slices let morphological
    interpolation fill the atrium."""
    image_path, label_path = real_case("LeftAtrium")
    image = read_volume(image_path)
    truth = read_label(label_path).array > 0
    i, j, _ = np.nonzero(truth)
    lo, hi = _extent(truth)
    box = (slice(max(i.min() - 8, 0), i.max() + 9), slice(max(j.min() - 8, 0), j.max() + 9),
           slice(lo, hi + 1))
    crop = Volume(np.ascontiguousarray(image.array[box]), image.spacing, image.origin,
                  image.direction)
    truth = truth[box]
    ann = truth.astype(np.uint8)
    n = truth.shape[2]
    q1, mid, q3 = n // 4, n // 2, n - 1 - n // 4
    one = oneseg.propagate(image=crop, annotation=_slices(ann, [q1]),
                           method="registration").array
    two = oneseg.propagate(image=crop, annotation=_slices(ann, [q1, q3]),
                           method="registration").array
    interp = oneseg.propagate(image=crop, annotation=_slices(ann, [0, mid, n - 1]),
                              method="interpolation").array
    between = slice(q1, q3 + 1)
    d1 = dice(one[:, :, between] > 0, truth[:, :, between])
    d2 = dice(two[:, :, between] > 0, truth[:, :, between])
    assert d2 > d1 + 0.01, (d1, d2)
    assert dice(interp > 0, truth) > 0.75
