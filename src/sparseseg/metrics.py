"""Segmentation metrics exactly as the CHAOS challenge defines them.

* DICE = 2 |S ∩ R| / (|S| + |R|)
* RAVD = |V_S - V_R| / V_R * 100 (percent)
* ASSD = (sum of distances from each surface voxel of S to the surface of R, plus the same
  from R to S) / (number of surface voxels of S + of R), in mm
* MSSD = the largest of those distances, in mm

The surface of a mask is the mask minus its erosion by the 6-neighbour cross with
``border_value=1``: outside the volume counts as foreground, so an organ touching the volume's
edge has no surface there. MONAI's ``get_surface_distance`` pads with background instead and so
finds surface on the edge; that is why the surfaces are computed here, while the distance
transform is the same Euclidean transform (scipy) MONAI uses, in mm from the voxel spacing.

Empty masks never crash. Both empty: a perfect score. One empty: Dice 0, RAVD 100 when the
prediction is empty (``inf`` when the reference is), and ASSD = MSSD = the volume's diagonal
in mm, the largest distance possible on the grid. The same worst distances are given when one
mask fills the whole volume (and so has no CHAOS surface) while the other does not.

Example:
    >>> import numpy as np
    >>> a = np.zeros((5, 5, 5), bool); a[1:4, 1:4, 1:4] = True
    >>> chaos_metrics(a, a, spacing=(1, 1, 1))["dice"]
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "ravd", "assd", "mssd")
"""Keys of every metrics dictionary, in display order."""


def surface(mask: np.ndarray) -> np.ndarray:
    """CHAOS surface voxels: ``mask`` minus its 6-neighbour erosion with border value 1."""
    mask = np.asarray(mask, bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=1)


def _surface_distances(
    from_surface: np.ndarray, to_surface: np.ndarray, spacing: Sequence[float]
) -> np.ndarray:
    """Distances in mm from each voxel of ``from_surface`` to the nearest of ``to_surface``."""
    edt = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return edt[from_surface]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def ravd(pred: np.ndarray, truth: np.ndarray) -> float:
    """Relative absolute volume difference in percent (0 when both are empty)."""
    v_pred, v_truth = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if v_truth == 0:
        return 0.0 if v_pred == 0 else float("inf")
    return abs(v_pred - v_truth) / v_truth * 100.0


def chaos_metrics(
    pred: np.ndarray, truth: np.ndarray, *, spacing: Sequence[float]
) -> dict[str, float]:
    """DICE, RAVD (%), ASSD and MSSD (mm) of one binary mask against a reference.

    Args:
        pred: Predicted binary mask.
        truth: Reference binary mask of the same shape.
        spacing: Voxel size in mm along each axis.

    Returns:
        ``{"dice", "ravd", "assd", "mssd"}``.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {truth.shape}")
    spacing = tuple(float(s) for s in spacing)
    result = {"dice": dice(pred, truth), "ravd": ravd(pred, truth)}
    n_pred, n_truth = pred.any(), truth.any()
    if not n_pred and not n_truth:
        result.update(assd=0.0, mssd=0.0)
        return result
    extent = [(n - 1) * s for n, s in zip(pred.shape, spacing, strict=True)]
    diagonal = float(np.linalg.norm(extent))
    if not (n_pred and n_truth):
        result.update(assd=diagonal, mssd=diagonal)
        return result
    s_pred, s_truth = surface(pred), surface(truth)
    if not s_pred.any() and not s_truth.any():
        # Both masks fill the whole volume: neither has a CHAOS surface, and they agree.
        result.update(assd=0.0, mssd=0.0)
        return result
    if not s_pred.any() or not s_truth.any():
        # One mask fills the whole volume (no CHAOS surface), the other does not: no surface
        # to measure against, so the worst values, as for an empty mask.
        result.update(assd=diagonal, mssd=diagonal)
        return result
    d_pred = _surface_distances(s_pred, s_truth, spacing)
    d_truth = _surface_distances(s_truth, s_pred, spacing)
    result["assd"] = float((d_pred.sum() + d_truth.sum()) / (d_pred.size + d_truth.size))
    result["mssd"] = float(max(d_pred.max(), d_truth.max()))
    return result


def label_values(*arrays: np.ndarray) -> list[int]:
    """Sorted non-zero label values present in any of the arrays."""
    values: set[int] = set()
    for arr in arrays:
        values.update(int(v) for v in np.unique(arr))
    values.discard(0)
    return sorted(values)


def evaluate_labels(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing: Sequence[float],
    labels: Iterable[int] | None = None,
) -> dict[int, dict[str, float]]:
    """CHAOS metrics for each label value of two label maps.

    Args:
        pred: Predicted label map.
        truth: Reference label map of the same shape.
        spacing: Voxel size in mm.
        labels: Label values to score; default: every non-zero value in the reference (or in
            the prediction, if the reference is empty).

    Returns:
        ``{label: {"dice", "ravd", "assd", "mssd"}}``.
    """
    if labels is None:
        labels = label_values(truth) or label_values(pred)
    return {
        int(v): chaos_metrics(pred == v, truth == v, spacing=spacing) for v in labels
    }


def organ_confusion(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the reference's organ voxels predicted as a *different* organ.

    Voxels where the reference says organ ``i`` and the prediction says organ ``j``, with
    ``j`` neither ``i`` nor background, over all non-background voxels of the reference. It
    measures the confusion between organs that Dice mixes with misses and leaks: a model
    trained on datasets that each label one organ tends to call an organ it never saw labeled
    by the name of one it did.

    Args:
        pred: Predicted label map.
        truth: Reference label map of the same shape.

    Returns:
        A fraction in [0, 1]; 0 when the reference has no organ voxels.

    Example:
        >>> import numpy as np
        >>> organ_confusion(np.array([1, 2, 0, 2]), np.array([1, 1, 1, 0]))
        0.3333333333333333
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {truth.shape}")
    organ = truth != 0
    total = int(organ.sum())
    if total == 0:
        return 0.0
    return int((organ & (pred != 0) & (pred != truth)).sum()) / total


def mean_metrics(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over rows (finite values only; NaN when none)."""
    rows = list(rows)
    out = {}
    for name in METRIC_NAMES:
        vals = [r[name] for r in rows if np.isfinite(r[name])]
        out[name] = float(np.mean(vals)) if vals else float("nan")
    return out


class ChaosMetric:
    """Accumulate CHAOS metrics over cases, like MONAI's cumulative metrics.

    Args:
        labels: Label values to score (default: those found in each reference).

    Example:
        >>> metric = ChaosMetric()
        >>> metric.update("case1", pred, truth, spacing=(1, 1, 1))  # doctest: +SKIP
        >>> metric.aggregate()  # doctest: +SKIP
    """

    def __init__(self, *, labels: Iterable[int] | None = None) -> None:
        self.labels = None if labels is None else list(labels)
        self.results: dict[str, dict[int, dict[str, float]]] = {}

    def update(
        self, name: str, pred: np.ndarray, truth: np.ndarray, *, spacing: Sequence[float]
    ) -> dict[int, dict[str, float]]:
        """Score one case and remember it under ``name``."""
        result = evaluate_labels(pred, truth, spacing=spacing, labels=self.labels)
        self.results[name] = result
        return result

    def aggregate(self) -> dict[int, dict[str, float]]:
        """Mean metrics per label over all cases seen so far."""
        labels = sorted({v for res in self.results.values() for v in res})
        return {
            v: mean_metrics(res[v] for res in self.results.values() if v in res) for v in labels
        }

    def reset(self) -> None:
        """Forget all cases."""
        self.results.clear()
