"""Model selection: the classifier of an epoch, the best epoch of a run."""

from __future__ import annotations

import json
import math

import numpy as np

from sparseseg.ltuda.selection import BestModelKeeper, best_classifier


def test_best_classifier_ties_go_to_the_first_and_no_score_to_the_fallback() -> None:
    vals = {"linear": np.array([0.4, np.nan]), "labeled": np.array([0.2, 0.6]),
            "unlabeled": np.array([0.4, np.nan]), "teacher": np.array([0.1, 0.2])}
    order = ("linear", "labeled", "unlabeled", "teacher")
    assert best_classifier(vals, order, fallback="unlabeled") == "linear"  # 0.4 each
    vals["teacher"] = np.array([0.9, np.nan])
    assert best_classifier(vals, order, fallback="unlabeled") == "teacher"
    empty = {c: np.array([np.nan, np.nan]) for c in order}
    assert best_classifier(empty, order, fallback="unlabeled") == "unlabeled"


def test_keeper_keeps_the_best_score_its_epoch_and_classifier() -> None:
    keeper = BestModelKeeper()
    assert (keeper.score, keeper.epoch, keeper.classifier) == (-math.inf, None, None)
    decisions = [keeper.offer(1, 0.3, "linear"), keeper.offer(2, 0.3, "labeled"),
                 keeper.offer(3, 0.5, "teacher"), keeper.offer(4, 0.45, "unlabeled")]
    assert decisions == [True, False, True, False]  # a tie is no improvement
    assert (keeper.score, keeper.epoch, keeper.classifier) == (0.5, 3, "teacher")


def test_keeper_without_validation_keeps_every_epoch() -> None:
    keeper = BestModelKeeper(keep_last=True)
    assert [keeper.offer(e, -math.inf, "linear") for e in (1, 2, 3)] == [True, True, True]
    assert keeper.epoch == 3


def test_keeper_state_round_trips_through_a_checkpoints_json() -> None:
    keeper = BestModelKeeper()
    again = BestModelKeeper()
    again.load_state_dict(json.loads(json.dumps(keeper.state_dict())))  # -inf survives
    assert again.score == -math.inf and again.epoch is None
    keeper.offer(2, 0.25, "labeled")
    again.load_state_dict(json.loads(json.dumps(keeper.state_dict())))
    assert (again.score, again.epoch, again.classifier) == (0.25, 2, "labeled")
    assert not again.offer(3, 0.2, "linear") and again.offer(4, 0.3, "linear")
