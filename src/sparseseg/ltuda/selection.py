"""Model selection on the validation cases: the classifier of an epoch, the best epoch.

Every epoch validates one or more classifiers (:func:`sparseseg.ltuda.evaluate.validate_all`);
:func:`best_classifier` picks the one to report, and a :class:`BestModelKeeper` decides
whether the epoch's weights are the best of the run so far, and so the ones to save.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sparseseg.ltuda.evaluate import mean_score


def best_classifier(vals: Mapping[str, np.ndarray], classifiers: Sequence[str],
                    fallback: str) -> str:
    """The classifier whose validation Dice is best.

    Args:
        vals: Dice per organ of each classifier.
        classifiers: The candidates, in order of preference (ties go to the first).
        fallback: The answer when no candidate has any score.

    Example:
        >>> vals = {"linear": np.array([0.5, 0.7]), "unlabeled": np.array([0.7, 0.5])}
        >>> best_classifier(vals, ("linear", "unlabeled"), "unlabeled")
        'linear'
        >>> best_classifier({"linear": np.array([np.nan])}, ("linear",), "unlabeled")
        'unlabeled'
    """
    classifier = max(classifiers, key=lambda c: mean_score(vals[c]))
    if not np.isfinite(mean_score(vals[classifier])):
        return fallback
    return classifier


class BestModelKeeper:
    """Keeps the best validation score of a run, its epoch and which weights scored it.

    :meth:`offer` each epoch's score; when it returns ``True`` the epoch's weights are the
    best so far and the caller saves them (over the previous best). Without validation cases
    (``keep_last``) every epoch is kept, so the last one stays.

    Args:
        keep_last: Keep every epoch (there is nothing to validate on).

    Example:
        >>> keeper = BestModelKeeper()
        >>> [keeper.offer(e, s, "linear") for e, s in ((1, 0.2), (2, 0.5), (3, 0.4))]
        [True, True, False]
        >>> keeper.epoch, keeper.score
        (2, 0.5)
    """

    def __init__(self, *, keep_last: bool = False) -> None:
        self.keep_last = keep_last
        self.score = -math.inf
        self.epoch: int | None = None
        self.classifier: str | None = None

    def offer(self, epoch: int, score: float, classifier: str) -> bool:
        """Whether the weights of ``epoch`` (validated by ``classifier``) are to be kept.

        Args:
            epoch: The epoch (from 1).
            score: Its mean validation Dice (``-inf`` when nothing was scored).
            classifier: The classifier that scored it.
        """
        if not (score > self.score or self.keep_last):
            return False
        self.score, self.epoch, self.classifier = float(score), int(epoch), classifier
        return True

    def state_dict(self) -> dict[str, Any]:
        """JSON state (for resumable checkpoints)."""
        return {"score": self.score, "epoch": self.epoch, "classifier": self.classifier}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.score = float(state["score"])
        self.epoch = None if state.get("epoch") is None else int(state["epoch"])
        self.classifier = state.get("classifier")
