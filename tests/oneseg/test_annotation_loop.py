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


def test_suggest_cross_check_adds_the_other_methods_disagreement(tiny_model: Path,
                                                                  phantom) -> None:
    from sparseseg.io.axes import to_slices
    from sparseseg.oneseg.suggestion import CROSS_WEIGHT, expected_gain

    image, truth = phantom
    lo, hi = _extent(truth == 1)
    # From one drawn slice the cross-check is not used (it moved the 2nd slice too far out).
    one = _slices(truth, [(lo + hi) // 2], 1)
    alone = oneseg.suggest(model=tiny_model, image=image, annotation=one, device="cpu")
    same = oneseg.suggest(model=tiny_model, image=image, annotation=one, device="cpu",
                          cross_check="copy")
    assert np.array_equal(alone.scores, same.scores) and alone.slice == same.slice
    assert same.cross_checked is False and alone.cross_checked is False
    ann = _slices(truth, [lo + (hi - lo) // 4, (lo + hi) // 2], 1)
    plain = oneseg.suggest(model=tiny_model, image=image, annotation=ann, device="cpu")
    checked = oneseg.suggest(model=tiny_model, image=image, annotation=ann, device="cpu",
                             cross_check="copy")
    copied = oneseg.propagate(image=image, annotation=ann, method="copy").array
    xor = (to_slices(plain.labels.array) != to_slices(copied)).sum(axis=(1, 2))
    assert xor.sum() > 0  # the copy and OneSeg disagree somewhere
    r = plain.result
    expected = expected_gain(r.uncertainty + r.disagreement + CROSS_WEIGHT * xor,
                             r.annotation.indices)
    finite = np.isfinite(checked.scores)
    np.testing.assert_allclose(checked.scores[finite], expected[finite])
    assert not np.allclose(checked.scores[finite], plain.scores[finite])
    assert checked.cross_checked is True
    # The labels and the confidence stay those of the method itself.
    assert np.array_equal(checked.labels.array, plain.labels.array)
    assert np.array_equal(checked.confidence, plain.confidence)
    for bad in ("oneseg", "interpolation", "magic"):
        with pytest.raises(InputError, match="--cross-check needs a propagating method other "
                                             "than 'oneseg'"):
            oneseg.suggest(model=tiny_model, image=image, annotation=ann, cross_check=bad)


def test_suggest_cli_cross_check(tiny_model: Path, phantom_folder: Path, phantom,
                                 tmp_path: Path, capsys) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    write_volume(tmp_path / "ann.nii.gz",
                 _slices(truth, [lo + (hi - lo) // 4, (lo + hi) // 2], 1), image)
    argv = ["-q", "oneseg", "suggest", "-m", str(tiny_model), "-i",
            str(phantom_folder / "image.nii.gz"), "-a", str(tmp_path / "ann.nii.gz"),
            "--json", "--device", "cpu", "--cross-check", "copy"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    api = oneseg.suggest(model=tiny_model, image=image, annotation=tmp_path / "ann.nii.gz",
                         device="cpu", cross_check="copy")
    assert printed["slice"] == api.slice
    assert main([*argv[:-1], "oneseg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparseseg: error: --cross-check needs a propagating method other "
                          "than 'oneseg'") and "\n" not in err


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
    """On a real LGE-MRI volume (cropped around the atrium and every second row and column
    kept, to keep registration fast) a second annotated slice helps registration between the
    two, and three slices let morphological interpolation fill the atrium."""
    image_path, label_path = real_case("LeftAtrium")
    image = read_volume(image_path)
    truth = read_label(label_path).array > 0
    i, j, _ = np.nonzero(truth)
    lo, hi = _extent(truth)
    box = (slice(max(i.min() - 8, 0), i.max() + 9, 2), slice(max(j.min() - 8, 0), j.max() + 9, 2),
           slice(lo, hi + 1))
    spacing = (2 * image.spacing[0], 2 * image.spacing[1], image.spacing[2])
    crop = Volume(np.ascontiguousarray(image.array[box]), spacing, image.origin,
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


@pytest.fixture(scope="module")
def phantom_refiner(phantom, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A refinement network trained for a few seconds on the test phantom's organ 1."""
    import torch

    from sparseseg.io.axes import to_slices
    from sparseseg.oneseg.refinement import (
        RefineConfig,
        SliceStack,
        save_refiner,
        train_refiner,
    )

    image, truth = phantom
    torch.manual_seed(0)
    stack = SliceStack(to_slices(image.array), size=32)
    target = stack.target(to_slices(truth == 1).astype(np.int64))
    net = train_refiner([stack], [target], [[]], n_classes=2,
                        config=RefineConfig(steps=120, batch_size=8, size=32))
    return save_refiner(tmp_path_factory.mktemp("refiner") / "net", net,
                        classes=np.array([0, 1]), size=32)


def test_suggest_with_a_refiner_points_where_the_propagation_is_wrong(
        phantom, phantom_refiner: Path) -> None:
    """Copy carries one outline through every slice and doubts nothing; a network that knows
    the organ doubts the copied slices that differ most from it."""
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0 = (lo + hi) // 2
    ann = _slices(truth, [k0], 1)
    plain = oneseg.suggest(image=image, annotation=ann, method="copy",
                           criterion="uncertainty")
    found = oneseg.suggest(image=image, annotation=ann, method="copy",
                           criterion="uncertainty", refiner=phantom_refiner, device="cpu")
    wrong = ((found.labels.array > 0) != (truth == 1)).sum(axis=(0, 1))
    assert found.scores[k0] == -np.inf
    assert not np.array_equal(found.scores, plain.scores)
    assert wrong[found.slice] >= 0.5 * wrong.max()
    # The scores follow the copy's real errors along the slices.
    finite = np.isfinite(found.scores)
    assert np.corrcoef(found.scores[finite], wrong[finite])[0, 1] > 0.7


def test_suggest_refuses_a_refiner_that_does_not_know_the_labels(
        phantom, phantom_refiner: Path, capsys, tmp_path: Path) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    ann = _slices(truth, [(lo + hi) // 2], 1) * 2
    from sparseseg.errors import ModelError

    with pytest.raises(ModelError, match=r"not \[2\]"):
        oneseg.suggest(image=image, annotation=ann, method="copy", refiner=phantom_refiner)
    write_volume(tmp_path / "ann.nii.gz", ann, image)
    capsys.readouterr()
    argv = ["-q", "oneseg", "suggest", "-i", str(image.path), "-a", str(tmp_path / "ann.nii.gz"),
            "--method", "copy", "--refiner", str(phantom_refiner)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(phantom_refiner) in err[0] and "[2]" in err[0]
    assert main(argv[:-2] + ["--refiner", str(tmp_path)]) == 2  # not a refiner folder


def test_propagate_with_a_refiner_corrects_the_copy(phantom, phantom_folder: Path,
                                                    phantom_refiner: Path,
                                                    tmp_path: Path) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    ks = [lo + (hi - lo) // 3, hi - (hi - lo) // 3]
    ann = _slices(truth, ks, 1)
    copied = oneseg.propagate(image=image, annotation=ann, method="copy")
    refined = oneseg.propagate(image=image, annotation=ann, method="copy",
                               refiner=phantom_refiner, device="cpu")
    organ = truth == 1
    for k in ks:
        assert np.array_equal(refined.array[:, :, k], ann[:, :, k])
    assert refined.array.dtype == copied.array.dtype
    assert dice(refined.array > 0, organ) > dice(copied.array > 0, organ) + 0.03  # 0.72 -> 0.77
    # The CLI writes the same labels; a folder run refuses --refiner before writing.
    write_volume(tmp_path / "ann.nii.gz", ann, image)
    out = tmp_path / "refined.nii.gz"
    argv = ["-q", "oneseg", "propagate", "-i", str(phantom_folder / "image.nii.gz"), "-a",
            str(tmp_path / "ann.nii.gz"), "-o", str(out), "--method", "copy", "--refiner",
            str(phantom_refiner), "--device", "cpu"]
    assert main(argv) == 0
    assert np.array_equal(read_label(out).array, refined.array)


def test_a_folder_run_refuses_a_refiner(phantom_folder: Path, phantom_refiner: Path,
                                        tmp_path: Path, capsys) -> None:
    (tmp_path / "ann").mkdir()
    out = tmp_path / "out"
    capsys.readouterr()
    argv = ["-q", "oneseg", "propagate", "-i", str(phantom_folder / "train"), "-a",
            str(tmp_path / "ann"), "-o", str(out), "--refiner", str(phantom_refiner)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "oneseg refine -m" in err[0]
    assert not out.exists()


# ---------------------------------------------------------------------------- empty slices
def test_an_empty_slice_stops_every_label(phantom) -> None:
    """Copy carries a label to the volume's edge; a slice annotated empty ends it there: the
    labels are those of the chain from the drawn slice up to it, and none from it on."""
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0, end = (lo + hi) // 2, hi + 1
    ann = _slices(truth, [k0], 1)
    free = oneseg.propagate(image=image, annotation=ann, method="copy").array
    assert free[:, :, -1].any()  # the copy runs on past the organ
    stopped = oneseg.propagate(image=image, annotation=ann, method="copy",
                               empty_slices=[end]).array
    assert (stopped[:, :, :end] == free[:, :, :end]).all()
    assert stopped[:, :, end - 1].any() and not stopped[:, :, end:].any()
    assert dice(stopped == 1, truth == 1) > dice(free == 1, truth == 1)
    faded = oneseg.propagate(image=image, annotation=ann, method="copy", fusion="distance",
                             empty_slices=[end]).array  # by choice: fades out half way
    half = (k0 + end) // 2
    assert faded[:, :, half].any() and not faded[:, :, half + 1:].any()
    # suggest never proposes an empty slice, and counts it as annotated.
    found = oneseg.suggest(image=image, annotation=ann, method="copy", empty_slices=[end])
    assert found.result.annotation.indices == [k0, end] and found.slice not in (k0, end)


def test_empty_slices_from_the_cli(phantom_folder: Path, phantom, tmp_path: Path,
                                   capsys) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0 = (lo + hi) // 2
    write_volume(tmp_path / "ann.nii.gz", _slices(truth, [k0], 1), image)
    base = ["-q", "oneseg", "propagate", "-i", str(phantom_folder / "image.nii.gz"), "-a",
            str(tmp_path / "ann.nii.gz"), "--method", "copy"]
    out = tmp_path / "out.nii.gz"
    assert main([*base, "-o", str(out), "--empty-slice", str(hi + 1), "--empty-slice",
                 str(lo - 1)]) == 0
    want = oneseg.propagate(image=image, annotation=_slices(truth, [k0], 1), method="copy",
                            empty_slices=[lo - 1, hi + 1]).array
    assert (read_label(out).array == want).all()
    assert not want[:, :, hi + 1:].any() and not want[:, :, : lo].any()
    capsys.readouterr()
    n = image.shape[2]
    for bad, message in (([str(n)], f"empty slice {n} is outside the volume (0..{n - 1})"),
                         ([str(k0)], f"empty slice {k0} is a slice on which labels are "
                                     "drawn")):
        target = tmp_path / f"bad{bad[0]}.nii.gz"
        assert main([*base, "-o", str(target), "--empty-slice", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "ann.nii.gz" in err[0]
        assert not target.exists()
    # A folder run takes no per-image slices.
    (tmp_path / "anns").mkdir()
    write_volume(tmp_path / "anns" / "image.nii.gz", _slices(truth, [k0], 1), image)
    assert main(["-q", "oneseg", "propagate", "-i", str(phantom_folder / "image.nii.gz"),
                 "-a", str(tmp_path / "anns"), "-o", str(tmp_path / "outs"), "--method",
                 "copy", "--empty-slice", "3"]) == 2
    assert "--empty-slice applies to a single image" in capsys.readouterr().err


def test_interpolation_counts_only_drawn_slices(phantom) -> None:
    image, truth = phantom
    lo, hi = _extent(truth == 1)
    with pytest.raises(InputError, match="label\\(s\\) 1 on 1"):
        oneseg.propagate(image=image, annotation=_slices(truth, [lo + 2], 1),
                         method="interpolation", empty_slices=[hi + 1])
    ks = [lo + 2, hi - 2]
    out = oneseg.propagate(image=image, annotation=_slices(truth, ks, 1),
                           method="interpolation", empty_slices=[(lo + hi) // 2]).array
    assert not out[:, :, (lo + hi) // 2].any() and out[:, :, (lo + hi) // 2 - 1].any()


def test_an_annotation_file_carries_its_empty_slices_in_a_sidecar(phantom_folder: Path, phantom,
                                                                  tmp_path: Path,
                                                                  capsys) -> None:
    from sparseseg.io.empty_slices import empty_slices_file, write_empty_slices

    image, truth = phantom
    lo, hi = _extent(truth == 1)
    k0 = (lo + hi) // 2
    ann_file = write_volume(tmp_path / "case.nii.gz", _slices(truth, [k0], 1), image)
    side = write_empty_slices(ann_file, [hi + 1])
    assert side == empty_slices_file(ann_file) == tmp_path / "case.empty.json"
    got = oneseg.propagate(image=image, annotation=ann_file, method="copy").array
    want = oneseg.propagate(image=image, annotation=_slices(truth, [k0], 1), method="copy",
                            empty_slices=[hi + 1]).array
    assert np.array_equal(got, want) and not got[:, :, hi + 1:].any()
    # With the flag too: both lists count.
    both = oneseg.propagate(image=image, annotation=ann_file, method="copy",
                            empty_slices=[lo - 1]).array
    assert not both[:, :, : lo].any() and not both[:, :, hi + 1:].any()
    # A folder run reads each annotation's sidecar.
    (tmp_path / "images").mkdir()
    (tmp_path / "anns").mkdir()
    write_volume(tmp_path / "images" / "case_0000.nii.gz", image.array, image)
    write_volume(tmp_path / "anns" / "case.nii.gz", _slices(truth, [k0], 1), image)
    write_empty_slices(tmp_path / "anns" / "case.nii.gz", [hi + 1])
    assert main(["-q", "oneseg", "propagate", "-i", str(tmp_path / "images"), "-a",
                 str(tmp_path / "anns"), "-o", str(tmp_path / "outs"), "--method",
                 "copy"]) == 0
    assert np.array_equal(read_label(tmp_path / "outs" / "case.nii.gz").array, want)
    # A sidecar that is not a list of slices: one line naming it, exit 2, nothing written.
    side.write_text('{"empty_slices": [3.5]}')
    out = tmp_path / "out.nii.gz"
    assert main(["-q", "oneseg", "propagate", "-i", str(phantom_folder / "image.nii.gz"),
                 "-a", str(ann_file), "-o", str(out), "--method", "copy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case.empty.json" in err[0] and "integer" in err[0]
    assert not out.exists()
    side.write_text(f'{{"empty_slices": [{k0}]}}')  # a drawn slice cannot be empty
    with pytest.raises(InputError, match=f"empty slice {k0} is a slice on which"):
        oneseg.propagate(image=image, annotation=ann_file, method="copy")
    write_empty_slices(ann_file, [])
    assert not side.exists()
