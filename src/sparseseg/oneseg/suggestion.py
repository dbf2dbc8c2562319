"""Which slice to annotate next, from the propagation itself.

After a propagation, every slice that was not annotated has a score (:data:`CRITERIA`); the
suggestion is the slice with the highest score among those the propagation labeled or doubted
(an annotation must hold a label, so a slice without any is never suggested unless nothing else
is left).

* ``gain`` (default): the doubt an annotation of the slice is expected to remove. Each slice
  ``j`` has a doubt ``u_j``: the summed ``1 - p(winning class)`` of its pixels plus the pixels
  on which the two chains meeting there disagree. Doubt grows with the distance ``d_j`` to the
  nearest annotated slice, so annotating slice ``k`` is assumed to cut ``u_j`` by the share
  ``(d_j - |j - k|) / d_j`` of that distance it removes:
  ``gain(k) = sum_j u_j * max(0, d_j - |j - k|) / d_j``. It favours slices in the middle of
  long doubtful stretches over a doubtful slice next to an annotated one.
* ``uncertainty``: the slice's own doubt ``u_k`` (large uncertain outlines score high, even
  next to an annotated slice).
* ``distance``: the number of slices to the nearest annotated slice (what uniform spacing
  does, restricted to the propagated extent).

A propagation's doubt cannot see a label that vanishes confidently: a chain that loses the
structure while it is still large is sure of the background it copies. A second propagation by
another method fails elsewhere; the pixels where the two disagree (:func:`cross_check_doubt`),
weighted by :data:`CROSS_WEIGHT`, can be added to each slice's doubt (``suggest
--cross-check registration``) once :data:`CROSS_MIN_SLICES` slices hold a label. Measured on
LeftAtrium (docs/benchmarks.md), it moves the 3rd slice to where the chains lose the structure
(+0.007 / +0.010 Dice on two sets of 10 cases) but, from a single slice, the 2nd slice too
far toward the structure's ends (-0.001 / -0.014).

docs/benchmarks.md measures them against uniform spacing and random slices.
"""

from __future__ import annotations

import numpy as np

from sparseseg.oneseg.propagation import Propagation

CRITERIA = ("gain", "uncertainty", "distance")

CROSS_WEIGHT = 0.5
"""Weight, beside the propagation's own doubt, of each pixel where a second method's
propagation disagrees (:func:`cross_check_doubt`)."""

CROSS_MIN_SLICES = 2
"""The cross-check counts only once this many slices hold a label."""


def distance_to_annotation(n: int, annotated: list[int]) -> np.ndarray:
    """Per slice, the number of slices to the nearest annotated one."""
    k = np.arange(n)[:, None]
    return np.abs(k - np.asarray(annotated)[None, :]).min(axis=1).astype(float)


def cross_check_doubt(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per slice, the number of pixels where two propagations' labels differ.

    Args:
        labels: ``(N, H, W)`` label stack (slices first).
        other: The same annotation propagated by another method, same shape.
    """
    if labels.shape != other.shape:
        raise ValueError(f"label stacks of shapes {labels.shape} and {other.shape}")
    return (labels != other).sum(axis=(1, 2)).astype(float)


def expected_gain(doubt: np.ndarray, annotated: list[int]) -> np.ndarray:
    """Per slice ``k``, ``sum_j doubt_j * max(0, d_j - |j - k|) / d_j`` (see the module)."""
    n = len(doubt)
    d = distance_to_annotation(n, annotated)
    j = np.arange(n)
    share = np.maximum(0.0, d[None, :] - np.abs(j[:, None] - j[None, :]))
    share = np.divide(share, d[None, :], out=np.zeros_like(share), where=d[None, :] > 0)
    return share @ doubt


def slice_scores(result: Propagation, criterion: str = "gain",
                 doubt: np.ndarray | None = None) -> np.ndarray:
    """Per slice, how much another annotation there is expected to help (higher: more).

    Annotated slices score ``-inf``. ``doubt`` replaces the propagation's own per-slice
    doubt (e.g. a refinement network's, :func:`~sparseseg.oneseg.refinement.network_doubt`).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r} ({', '.join(CRITERIA)})")
    n = len(result.area)
    annotated = result.annotation.indices
    if doubt is None:
        doubt = result.uncertainty + result.disagreement
    elif len(doubt) != n:
        raise ValueError(f"doubt has {len(doubt)} slices, the propagation {n}")
    if criterion == "gain":
        scores = expected_gain(doubt, annotated)
    elif criterion == "uncertainty":
        scores = doubt
    else:
        scores = distance_to_annotation(n, annotated)
    scores = scores.astype(float)
    scores[annotated] = -np.inf
    return scores


def suggest_slice(result: Propagation, criterion: str = "gain",
                  doubt: np.ndarray | None = None) -> int:
    """The slice to annotate next (0-based index along the slice axis).

    Among the slices the propagation labeled or doubted (and that are not annotated), the one
    of highest :func:`slice_scores`; ties and all-zero scores go to the slice farthest from
    the annotated ones. ``doubt`` as for :func:`slice_scores`.
    """
    scores = slice_scores(result, criterion, doubt)
    n = len(scores)
    annotated = result.annotation.indices
    candidates = np.flatnonzero((result.region > 0) & np.isfinite(scores))
    if candidates.size == 0:
        candidates = np.flatnonzero(np.isfinite(scores))
    if candidates.size == 0:
        raise ValueError("every slice is annotated: nothing left to suggest")
    far = distance_to_annotation(n, annotated)
    order = np.lexsort((-far[candidates], -scores[candidates]))
    return int(candidates[order[0]])
