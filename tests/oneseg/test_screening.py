"""The screening module: representative sets, training pairs, the slice to annotate."""

from __future__ import annotations

import numpy as np

from sparseseg.oneseg.screening import (
    most_representative,
    neighbour_chain,
    random_pairs,
    representative_score,
    representative_set,
    screened_pairs,
)


def _clustered_features(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    centres = np.eye(3) * 5
    groups = [np.arange(0, 6), np.arange(6, 14), np.arange(14, 20)]
    feats = np.zeros((20, 3))
    for c, idx in enumerate(groups):
        feats[idx] = centres[c] + rng.normal(0, 0.3, (len(idx), 3))
    return feats, groups


def test_representative_score_is_summed_cosine_to_others() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4))
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expected = [sum(unit[i] @ unit[j] for j in range(6) if j != i) for i in range(6)]
    assert np.allclose(representative_score(feats), expected)


def test_one_representative_per_cluster_sorted() -> None:
    feats, groups = _clustered_features(np.random.default_rng(1))
    reps = representative_set(feats, clusters=3, seed=0)
    assert reps == sorted(reps) and len(reps) == 3
    for rep, idx in zip(reps, groups, strict=True):
        assert rep in idx
        # The representative maximises summed cosine similarity inside its cluster (Eq. 2-4).
        assert rep == idx[int(np.argmax(representative_score(feats[idx])))]


def test_pairs_are_consecutive_representatives() -> None:
    assert screened_pairs([2, 9, 15]) == [(2, 9), (9, 15)]
    assert screened_pairs([4]) == []


def test_most_representative_respects_candidates() -> None:
    feats = np.array([[1, 0], [1, 0.1], [1, -0.1], [0, 1.0]])
    # Slice 1 is closest to both tilted neighbours, so it is the most representative.
    assert most_representative(feats) == 1
    assert most_representative(feats, candidates=np.array([True, False, True, True])) == 0
    assert most_representative(feats, candidates=np.array([False, False, True, True])) == 2


def test_random_pairs_within_gap() -> None:
    pairs = random_pairs(10, 50, np.random.default_rng(0), max_gap=4)
    assert len(pairs) == 50
    assert all(1 <= b - a <= 4 and 0 <= a < b < 10 for a, b in pairs)
    assert random_pairs(1, 5, np.random.default_rng(0)) == []


def test_neighbour_chain_links_close_slices_inside_the_volume() -> None:
    rng = np.random.default_rng(0)
    gaps = set()
    for n in (2, 5, 40):
        for _ in range(200):
            chain = neighbour_chain(n, rng, max_gap=3)
            assert chain, "a volume of two or more slices always gives a pair"
            gap = chain[0][1] - chain[0][0]
            gaps.add(gap)
            assert 1 <= gap <= 3 and len(chain) <= 4
            for (_, b), (c, _) in zip(chain[:-1], chain[1:], strict=False):
                assert b == c  # consecutive pairs share a slice (scheduled sampling)
            for a, b in chain:
                assert 0 <= a < b < n and b - a == gap
    assert gaps == {1, 2, 3}
    assert neighbour_chain(1, rng) == []
