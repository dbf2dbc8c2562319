"""CHAOS metrics checked against an independent brute-force implementation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from sparseseg.io.reader import read_label
from sparseseg.metrics import (
    METRIC_NAMES,
    ChaosMetric,
    chaos_metrics,
    dice,
    evaluate_labels,
    label_values,
    mean_metrics,
    organ_confusion,
    surface,
)
from sparseseg_test_utils import random_blob, real_case

TOL = 1e-3


# --- independent reference implementation -------------------------------------------------


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by an explicit check of the 6 neighbours; outside counts as foreground."""
    mask = np.asarray(mask, bool)
    out = np.zeros_like(mask)
    shape = mask.shape
    for idx in zip(*np.nonzero(mask), strict=True):
        for axis, step in itertools.product(range(3), (-1, 1)):
            nb = list(idx)
            nb[axis] += step
            if 0 <= nb[axis] < shape[axis] and not mask[tuple(nb)]:
                out[idx] = True
                break
    return out


def min_distances(src: np.ndarray, dst: np.ndarray, *, kdtree: bool = False) -> np.ndarray:
    """For each point of ``src`` (N, 3) in mm, the distance to the nearest point of ``dst``."""
    if kdtree:
        return cKDTree(dst).query(src)[0]
    out = np.empty(len(src))
    for start in range(0, len(src), 256):
        block = src[start : start + 256]
        d2 = ((block[:, None, :] - dst[None, :, :]) ** 2).sum(-1)
        out[start : start + 256] = np.sqrt(d2.min(1))
    return out


def reference_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing, *, surf=brute_surface, kdtree: bool = False
) -> dict[str, float]:
    """CHAOS metrics written out from the definitions, for non-empty masks with a surface."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    v_p, v_t = pred.sum(), truth.sum()
    dice = 2 * (pred & truth).sum() / (v_p + v_t)
    ravd = abs(int(v_p) - int(v_t)) / v_t * 100
    sp = np.asarray(spacing, float)
    pts_p = np.argwhere(surf(pred)) * sp
    pts_t = np.argwhere(surf(truth)) * sp
    d_p = min_distances(pts_p, pts_t, kdtree=kdtree)
    d_t = min_distances(pts_t, pts_p, kdtree=kdtree)
    assd = (d_p.sum() + d_t.sum()) / (len(d_p) + len(d_t))
    mssd = max(d_p.max(), d_t.max())
    return {"dice": dice, "ravd": ravd, "assd": assd, "mssd": mssd}


def assert_metrics_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=TOL), name


# --- surface -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_matches_brute_force(seed: int) -> None:
    mask = random_blob((14, 12, 9), np.random.default_rng(seed))
    np.testing.assert_array_equal(surface(mask), brute_surface(mask))


def test_no_surface_on_volume_edge() -> None:
    mask = np.zeros((6, 6, 6), bool)
    mask[:3] = True  # touches the faces i=0, j=0/5, k=0/5
    surf = surface(mask)
    # Only the inner face i=2 is surface; the faces on the volume's edge are not.
    assert surf[2].all()
    assert not surf[:2].any()
    assert surf.sum() == 36


def test_full_volume_has_no_surface() -> None:
    assert not surface(np.ones((4, 5, 6), bool)).any()


# --- metrics against the reference ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_blobs_anisotropic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (20, 18, 10)
    pred, truth = random_blob(shape, rng), random_blob(shape, rng)
    spacing = tuple(rng.uniform(0.5, 4.0, 3))
    got = chaos_metrics(pred, truth, spacing=spacing)
    assert_metrics_close(got, reference_metrics(pred, truth, spacing))


def test_spacing_matters() -> None:
    rng = np.random.default_rng(7)
    pred, truth = random_blob((16, 16, 8), rng), random_blob((16, 16, 8), rng)
    iso = chaos_metrics(pred, truth, spacing=(1, 1, 1))
    aniso = chaos_metrics(pred, truth, spacing=(1, 1, 5))
    assert iso["dice"] == aniso["dice"]
    assert iso["assd"] != pytest.approx(aniso["assd"], abs=TOL)


def test_organ_touching_edge() -> None:
    shape = (16, 14, 8)
    truth = np.zeros(shape, bool)
    truth[:9, 3:11, :] = True  # touches i=0, k=0 and k=7
    pred = np.zeros(shape, bool)
    pred[:7, 4:12, 1:] = True
    spacing = (0.8, 1.2, 3.0)
    got = chaos_metrics(pred, truth, spacing=spacing)
    assert_metrics_close(got, reference_metrics(pred, truth, spacing))
    # With edge voxels counted as surface (background padding) the result would differ.
    padded = np.pad(truth, 1)
    edge_surface = (padded & ~ndimage.binary_erosion(padded))[1:-1, 1:-1, 1:-1]
    assert edge_surface.sum() > surface(truth).sum()


def test_shift_gives_known_distances() -> None:
    truth = np.zeros((20, 20, 20), bool)
    truth[5:12, 5:12, 5:12] = True
    pred = np.roll(truth, 2, axis=2)
    got = chaos_metrics(pred, truth, spacing=(1, 1, 2.5))
    assert got["mssd"] == pytest.approx(5.0, abs=TOL)
    assert got["dice"] == pytest.approx(2 * 5 / 14)
    assert got["ravd"] == 0.0


def test_dice_known_values_and_empty_masks() -> None:
    truth = np.zeros((4, 5), bool)
    truth[0, :4] = True  # 4 voxels
    pred = np.zeros_like(truth)
    pred[0, 2:5] = True  # 3 voxels, 2 of them in the truth
    assert dice(pred, truth) == 2 * 2 / (3 + 4) == dice(truth, pred)
    assert dice(pred.astype(np.uint8) * 7, truth) == 4 / 7  # any non-zero value is inside
    assert dice(truth, truth) == 1.0
    empty = np.zeros_like(truth)
    assert dice(empty, empty) == 1.0  # nothing to find, nothing found
    assert dice(empty, truth) == dice(truth, empty) == 0.0
    assert isinstance(dice(pred, truth), float)


def test_identical_masks_are_perfect() -> None:
    mask = random_blob((12, 12, 12), np.random.default_rng(3))
    got = chaos_metrics(mask, mask, spacing=(1, 2, 3))
    assert got == {"dice": 1.0, "ravd": 0.0, "assd": 0.0, "mssd": 0.0}


# --- empty masks -----------------------------------------------------------------------------


def test_empty_prediction_gets_worst_values() -> None:
    truth = random_blob((10, 12, 8), np.random.default_rng(0))
    spacing = (1.0, 2.0, 3.0)
    got = chaos_metrics(np.zeros_like(truth), truth, spacing=spacing)
    diagonal = math.sqrt((9 * 1.0) ** 2 + (11 * 2.0) ** 2 + (7 * 3.0) ** 2)
    assert got == {"dice": 0.0, "ravd": 100.0, "assd": diagonal, "mssd": diagonal}


def test_empty_reference_gets_worst_values() -> None:
    pred = random_blob((10, 12, 8), np.random.default_rng(0))
    got = chaos_metrics(pred, np.zeros_like(pred), spacing=(1, 1, 1))
    assert got["dice"] == 0.0
    assert got["ravd"] == math.inf
    assert got["assd"] == got["mssd"] == pytest.approx(math.sqrt(81 + 121 + 49))


def test_both_empty_is_perfect() -> None:
    empty = np.zeros((5, 6, 7), bool)
    assert chaos_metrics(empty, empty, spacing=(1, 1, 1)) == {
        "dice": 1.0,
        "ravd": 0.0,
        "assd": 0.0,
        "mssd": 0.0,
    }


def test_full_volume_prediction_is_not_perfect() -> None:
    truth = np.zeros((10, 10, 10), bool)
    truth[3:6, 3:6, 3:6] = True
    got = chaos_metrics(np.ones_like(truth), truth, spacing=(1, 1, 1))
    assert got["assd"] == got["mssd"] == pytest.approx(math.sqrt(3 * 81))
    both = chaos_metrics(np.ones_like(truth), np.ones_like(truth), spacing=(1, 1, 1))
    assert both["assd"] == 0.0 and both["dice"] == 1.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        chaos_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), spacing=(1, 1, 1))


# --- label maps and aggregation --------------------------------------------------------------


def test_evaluate_labels_per_label() -> None:
    rng = np.random.default_rng(5)
    shape = (16, 16, 10)
    truth = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    truth[random_blob(shape, rng, n_balls=2)] = 1
    truth[random_blob(shape, rng, n_balls=2)] = 2
    pred[random_blob(shape, rng, n_balls=2)] = 1
    pred[random_blob(shape, rng, n_balls=2)] = 2
    spacing = (1.0, 1.5, 2.0)
    res = evaluate_labels(pred, truth, spacing=spacing)
    assert sorted(res) == label_values(truth)
    for v in res:
        assert_metrics_close(res[v], reference_metrics(pred == v, truth == v, spacing))
    only = evaluate_labels(pred, truth, spacing=spacing, labels=[2])
    assert list(only) == [2]


def test_label_values_and_mean() -> None:
    assert label_values(np.array([0, 3, 1]), np.array([2, 0])) == [1, 2, 3]
    rows = [
        {"dice": 1.0, "ravd": 0.0, "assd": 0.0, "mssd": 0.0},
        {"dice": 0.5, "ravd": math.inf, "assd": 2.0, "mssd": 4.0},
    ]
    mean = mean_metrics(rows)
    assert mean == {"dice": 0.75, "ravd": 0.0, "assd": 1.0, "mssd": 2.0}


def test_chaos_metric_accumulates() -> None:
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    metric = ChaosMetric()
    metric.update("a", truth, truth, spacing=(1, 1, 1))
    metric.update("b", np.zeros_like(truth), truth, spacing=(1, 1, 1))
    assert metric.aggregate()[1]["dice"] == pytest.approx(0.5)
    metric.reset()
    assert metric.aggregate() == {}


# --- real volumes ----------------------------------------------------------------------------


def _crop(pred: np.ndarray, truth: np.ndarray, margin: int = 3):
    """Crop both masks to their joint bounding box plus a margin, without leaving the volume."""
    idx = np.argwhere(pred | truth)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, truth.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return pred[sl], truth[sl]


@pytest.mark.parametrize("organ", [1, 5])
def test_real_abdomen_mr_perturbed(real_data, organ: int) -> None:
    _, label_file = real_case("AbdomenTS", "ts_mr")
    label = read_label(label_file)
    truth = label.array == organ
    if not truth.any():
        pytest.skip(f"organ {organ} absent from {label_file}")
    pred = ndimage.binary_erosion(truth, iterations=1)
    pred = np.roll(pred, 2, axis=0)
    got = chaos_metrics(pred, truth, spacing=label.spacing)
    # Independent check on the full grid: surfaces by explicit neighbour test, k-d tree distances.
    full = reference_metrics(pred, truth, label.spacing, kdtree=True)
    assert_metrics_close(got, full)
    assert 0.3 < got["dice"] < 1.0 and got["assd"] > 0


def test_real_left_atrium_perturbed(real_data) -> None:
    _, label_file = real_case("LeftAtrium")
    label = read_label(label_file)
    truth = label.array == 1
    pred = ndimage.binary_dilation(truth, iterations=2)
    pred = np.roll(pred, -3, axis=2)
    got = chaos_metrics(pred, truth, spacing=label.spacing)
    want = reference_metrics(pred, truth, label.spacing, kdtree=True)
    assert_metrics_close(got, want)
    assert got["ravd"] > 0 and got["mssd"] >= got["assd"] > 0


def test_real_crop_brute_force(real_data) -> None:
    _, label_file = real_case("AbdomenTS", "ts_mr")
    label = read_label(label_file)
    values = label_values(label.array)
    organ = min(values, key=lambda v: (label.array == v).sum())  # smallest organ: fast
    truth = label.array == organ
    pred = np.roll(ndimage.binary_dilation(truth), 1, axis=1)
    got = chaos_metrics(pred, truth, spacing=label.spacing)
    # The crop keeps a background margin (or the volume's own edge), so surfaces are unchanged
    # and the brute-force pairwise distances stay tractable.
    p, t = _crop(pred, truth)
    want = reference_metrics(p, t, label.spacing)
    assert_metrics_close(got, want)


def test_organ_confusion_counts_only_organ_swaps() -> None:
    truth = np.array([1, 1, 1, 1, 2, 2, 0, 0])
    # one liver voxel missed (0), one called organ 2, one organ-2 voxel called 1; background
    # predicted as an organ is a leak, not a confusion
    pred = np.array([1, 0, 2, 1, 1, 2, 1, 2])
    assert organ_confusion(pred, truth) == pytest.approx(2 / 6)
    assert organ_confusion(truth, truth) == 0.0
    assert organ_confusion(pred, np.zeros_like(truth)) == 0.0


def test_organ_confusion_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        organ_confusion(np.zeros(3), np.zeros(4))
