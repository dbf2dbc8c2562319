"""Scoring the next slice to annotate from per-slice doubt."""

from __future__ import annotations

import numpy as np
import pytest

from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.propagation import Propagation
from sparseseg.oneseg.suggestion import (
    cross_check_doubt,
    expected_gain,
    slice_scores,
    suggest_slice,
)

N = 12


def _result(uncertainty: np.ndarray, annotated: list[int]) -> Propagation:
    ann = SliceAnnotation({k: np.ones((4, 4), np.uint8) for k in annotated}, N)
    return Propagation(labels=np.zeros((4, 4, N), np.uint8), annotation=ann,
                       uncertainty=uncertainty.astype(float), region=np.full(N, 16),
                       disagreement=np.zeros(N), area=np.full(N, 16))


def test_expected_gain_favours_the_middle_of_a_doubtful_stretch():
    doubt = np.zeros(N)
    doubt[6:11] = 1.0  # doubtful slices 6-10, annotated at 0 only
    gain = expected_gain(doubt, [0])
    assert int(np.argmax(gain)) == 8
    # One doubtful slice next to the annotation is worth little.
    lone = np.zeros(N)
    lone[1] = 5.0
    assert expected_gain(lone, [0]).max() == pytest.approx(5.0)


def test_a_given_doubt_replaces_the_propagations_own():
    own = np.zeros(N)
    own[10] = 100.0
    result = _result(own, [0])
    assert suggest_slice(result, "uncertainty") == 10
    other = np.zeros(N)
    other[4] = 1.0
    assert suggest_slice(result, "uncertainty", other) == 4
    scores = slice_scores(result, "uncertainty", other)
    assert scores[0] == -np.inf and scores[4] == 1.0 and scores[10] == 0.0
    with pytest.raises(ValueError, match="doubt has 3 slices, the propagation 12"):
        slice_scores(result, "gain", np.zeros(3))


def test_cross_check_doubt_counts_the_pixels_two_propagations_disagree_on():
    a = np.zeros((3, 4, 4), np.uint8)
    b = a.copy()
    a[1, :2] = 1  # 8 pixels only in a
    b[2, 0, 0] = 2  # 1 pixel only in b
    a[0, 1, 1], b[0, 1, 1] = 1, 2  # labeled in both, with other values
    assert cross_check_doubt(a, b).tolist() == [1.0, 8.0, 1.0]
    assert cross_check_doubt(a, a).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="shapes"):
        cross_check_doubt(a, b[:2])
