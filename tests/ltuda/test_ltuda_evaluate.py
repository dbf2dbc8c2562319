"""Validation scores of an LTUDA model: Dice per organ, class scores of slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseseg.ltuda.data import SliceCase
from sparseseg.ltuda.evaluate import (
    dice_per_organ,
    mean_score,
    predict_slices,
    validate,
    validate_all,
)
from sparseseg.ltuda.model import LTUDAModel
from sparseseg.metrics import dice


def test_dice_per_organ_known_values() -> None:
    pred = np.zeros((2, 4, 4), np.int64)
    pred[0, :2, :2] = 1  # 4 pixels of organ 1, 2 of them right
    pred[1, 0, 0] = 2  # organ 2 where the reference has none
    target = np.zeros((2, 4, 4, 4), np.uint8)  # (S, organs, H, W)
    target[0, 0, :1, :2] = 1
    target[0, 0, 3, 3] = 1  # 3 reference pixels of organ 1
    labeled = np.array([True, True, True, False])
    got = dice_per_organ(pred, target, labeled)
    assert got[0] == 2 * 2 / (4 + 3)
    assert got[1] == 0.0  # predicted, not in the reference
    assert got[2] == 1.0  # empty in both: a perfect score, as metrics.dice
    assert np.isnan(got[3])  # not labeled: not scored
    assert got[:3] == [dice(pred == k + 1, target[:, k]) for k in range(3)]


class _ClassMapModel:
    """Predicts the class map written in the image (a stand-in with a known answer)."""

    n_organs = 2

    def eval(self) -> _ClassMapModel:
        return self

    def all_class_scores(self, x: torch.Tensor, classifiers: tuple[str, ...]) -> dict:
        classes = torch.nn.functional.one_hot(x[:, 0].round().long(), self.n_organs + 1)
        return {c: classes.permute(0, 3, 1, 2).float() for c in classifiers}


def _case(name: str, pred: np.ndarray, target: np.ndarray, labeled: list[bool]) -> SliceCase:
    return SliceCase(name, 0, pred.astype(np.float32), target.astype(np.uint8),
                     np.array(labeled))


def test_validate_all_means_each_organ_over_the_cases_that_label_it() -> None:
    target = np.zeros((3, 2, 4, 4))
    target[:, 0, :2] = 1  # organ 1: the top half of each slice
    target[:, 1, 3, 3] = 1  # organ 2: one pixel
    right = target[:, 0] + 2 * target[:, 1]  # the reference's class map
    half = right.copy()
    half[:, 0] = 0  # organ 1: 12 of its 24 pixels found (row 0 of each slice missed)
    cases = [_case("a", right, target, [True, False]),
             _case("b", half, target, [True, True]),
             _case("c", right, target, [False, False])]
    scores = validate_all(_ClassMapModel(), cases, ("linear", "unlabeled"), torch.device("cpu"),
                          batch=2)
    organ1 = (1.0 + 2 * 12 / (12 + 24)) / 2  # cases a and b
    for c in ("linear", "unlabeled"):
        np.testing.assert_array_equal(scores[c], [organ1, 1.0])  # organ 2: case b only
    assert np.isnan(validate(_ClassMapModel(), cases[2:], "linear", torch.device("cpu"))).all()


def test_validate_all_matches_single_classifier_validation() -> None:
    torch.manual_seed(0)
    model = LTUDAModel(n_organs=2, base_channels=4, depth=2)
    rng = np.random.default_rng(0)
    target = (rng.random((5, 2, 16, 16)) < 0.3).astype(np.uint8)
    cases = [_case(n, rng.normal(size=(5, 16, 16)), target, [True, True]) for n in "ab"]
    both = validate_all(model, cases, ("linear", "unlabeled"), torch.device("cpu"))
    for name, val in both.items():
        np.testing.assert_array_equal(val, validate(model, cases, name, torch.device("cpu")))


def test_predict_slices_does_not_depend_on_the_batch() -> None:
    torch.manual_seed(0)
    model = LTUDAModel(n_organs=2, base_channels=4, depth=2)
    image = np.random.default_rng(1).normal(size=(5, 16, 16)).astype(np.float32)
    whole = predict_slices(model, image, "linear", torch.device("cpu"))
    assert whole.shape == (5, 3, 16, 16) and not model.training
    assert torch.all(whole[:, 0] == 0.5)  # the linear classifier's threshold channel
    torch.testing.assert_close(predict_slices(model, image, "linear", torch.device("cpu"),
                                              batch=2), whole)


@pytest.mark.parametrize(("val", "want"), [([0.5, np.nan, 1.0], 0.75), ([0.2], 0.2),
                                           ([np.nan, np.nan], -np.inf), ([], -np.inf)])
def test_mean_score(val: list[float], want: float) -> None:
    assert mean_score(np.array(val, float)) == want
