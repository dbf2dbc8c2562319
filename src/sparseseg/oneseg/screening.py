"""The screening module: representative slices for training pairs and for annotation.

Training (paper Eq. 2-4): K-means clusters a volume's slices by their pooled features; in each
cluster the slice with the largest summed cosine similarity to the cluster's other slices is its
representative; consecutive representatives (in slice order) form the training pairs.

Test (Eq. 5-7): the single slice with the largest summed cosine similarity to all other slices
of the volume is the one to annotate. Organ-blind, that slice can hold no organ at all on a
whole-body scan; once an organ is marked, :func:`region_descriptors` restricts the comparison
to the organ's in-plane box and its slices (``oneseg select --annotation``).
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


def label_box(mask: np.ndarray, *, margin: float = 0.25) -> tuple[float, float, float, float]:
    """In-plane bounding box of a ``(N, H, W)`` slice stack's foreground, as fractions.

    Args:
        mask: Foreground per slice (slice axis first).
        margin: Widen each side by this share of the box's size (at least two pixels).

    Returns:
        ``(row0, row1, col0, col1)`` in ``[0, 1]`` of the plane's height and width; the whole
        plane for an empty mask.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0, 1.0, 0.0, 1.0
    h, w = mask.shape[1:]
    rows = np.flatnonzero(mask.any(axis=(0, 2)))
    cols = np.flatnonzero(mask.any(axis=(0, 1)))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dr = max(2.0, margin * (r1 - r0))
    dc = max(2.0, margin * (c1 - c0))
    return (max(0.0, (r0 - dr) / h), min(1.0, (r1 + dr) / h),
            max(0.0, (c0 - dc) / w), min(1.0, (c1 + dc) / w))


def region_descriptors(features: np.ndarray, box: tuple[float, float, float, float]
                       ) -> np.ndarray:
    """Slice descriptors of the feature maps' part inside ``box``: ``(N, E, h, w)`` -> ``(N, D)``.

    The maps are cropped (at least one feature pixel each way) and flattened, so slices are
    compared location by location inside the organ's box, as Eq. 5 compares whole slices.
    """
    n, _, h, w = features.shape
    r0, r1, c0, c1 = box
    i0, j0 = min(int(np.floor(r0 * h)), h - 1), min(int(np.floor(c0 * w)), w - 1)
    i1, j1 = max(int(np.ceil(r1 * h)), i0 + 1), max(int(np.ceil(c1 * w)), j0 + 1)
    return np.asarray(features[:, :, i0:i1, j0:j1]).reshape(n, -1)
