"""The screening module: representative slices for training pairs and for annotation.

Training (paper Eq. 2-4): K-means clusters a volume's slices by their pooled features; in each
cluster the slice with the largest summed cosine similarity to the cluster's other slices is its
representative; consecutive representatives (in slice order) form the training pairs.

Test (Eq. 5-7): the single slice with the largest summed cosine similarity to all other slices
of the volume is the one to annotate.
"""

from __future__ import annotations

import numpy as np


def _cosine_matrix(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float64)
    f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)
    return f @ f.T


def representative_score(features: np.ndarray) -> np.ndarray:
    """Summed cosine similarity of each row to every other row (Eq. 3 and 6)."""
    sim = _cosine_matrix(features)
    return sim.sum(axis=1) - np.diag(sim)


def most_representative(features: np.ndarray, *, candidates: np.ndarray | None = None) -> int:
    """Index of the most representative slice (Eq. 5-7).

    Args:
        features: ``(N, D)`` pooled slice features.
        candidates: Optional boolean mask of slices allowed to win (e.g. slices inside the
            body); all slices still count in the similarity sum.

    Returns:
        The slice index.
    """
    sim = _cosine_matrix(features)
    score = sim.sum(axis=1) - np.diag(sim)
    if candidates is not None and np.any(candidates):
        score = np.where(candidates, score, -np.inf)
    return int(np.argmax(score))


def representative_set(features: np.ndarray, *, clusters: int, seed: int = 0) -> list[int]:
    """Representative slice of each K-means cluster, sorted by slice index (Eq. 2-4).

    Args:
        features: ``(N, D)`` pooled slice features of one volume.
        clusters: Number of clusters K (clipped to the number of slices).
        seed: K-means seed (its initial centres are random slices).

    Returns:
        Sorted slice indices, one per non-empty cluster.
    """
    from sklearn.cluster import KMeans

    n = len(features)
    k = max(1, min(clusters, n))
    if k == 1:
        return [most_representative(features)]
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(
        np.asarray(features, np.float64)
    )
    reps = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if members.size:
            reps.append(int(members[most_representative(features[members])]))
    return sorted(reps)


def screened_pairs(representatives: list[int]) -> list[tuple[int, int]]:
    """Consecutive pairs of representatives ``(r_i, r_{i+1})``."""
    return [(a, b) for a, b in zip(representatives[:-1], representatives[1:], strict=True)]


def random_pairs(
    n_slices: int, count: int, rng: np.random.Generator, *, max_gap: int = 4
) -> list[tuple[int, int]]:
    """Random slice pairs 1..``max_gap`` apart (the ablation without screening, Sli2Vol-like)."""
    if n_slices < 2:
        return []
    pairs = []
    for _ in range(count):
        gap = int(rng.integers(1, min(max_gap, n_slices - 1) + 1))
        a = int(rng.integers(0, n_slices - gap))
        pairs.append((a, a + gap))
    return pairs


def neighbour_chain(
    n_slices: int, rng: np.random.Generator, *, max_gap: int = 3, length: int = 4
) -> list[tuple[int, int]]:
    """A short chain of pairs ``(a, a+g), (a+g, a+2g), ...`` with a random gap ``g``.

    Consecutive pairs share a slice, so scheduled sampling can feed a reconstruction forward
    (see ``training._triples``).

    Args:
        n_slices: Slices in the volume.
        rng: Random generator (draws the gap, then the start).
        max_gap: Largest gap ``g`` (drawn from ``1..max_gap``, at most ``n_slices - 1``).
        length: Pairs in the chain (fewer near the volume's end).

    Returns:
        The pairs; empty for a volume of one slice.
    """
    if n_slices < 2:
        return []
    gap = int(rng.integers(1, min(max_gap, n_slices - 1) + 1))
    start = int(rng.integers(0, max(1, n_slices - length * gap)))
    return [
        (start + j * gap, start + (j + 1) * gap)
        for j in range(length)
        if start + (j + 1) * gap < n_slices
    ]


def structure_slices(spread: np.ndarray) -> np.ndarray | None:
    """Slices that hold structure: intensity spread (standard deviation) above a quarter of
    the largest; ``None`` when every slice is flat."""
    spread = np.asarray(spread)
    return spread > 0.25 * spread.max() if spread.max() > 0 else None


def middle_structure_slice(spread: np.ndarray) -> int:
    """The middle one of the slices that hold structure (:func:`structure_slices`), or of all
    slices when every one is flat."""
    mask = structure_slices(spread)
    inside = np.flatnonzero(mask) if mask is not None else np.arange(len(spread))
    return int(inside[len(inside) // 2])
