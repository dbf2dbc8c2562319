"""Scoring an LTUDA model on validation cases: class scores of slices, Dice per organ.

Validation uses the cases' own partial labels: an organ is scored only on the cases whose
dataset labels it (:attr:`~sparseseg.ltuda.data.SliceCase.labeled`), with the Dice of
:func:`sparseseg.metrics.dice` over the whole case (3D).
"""

from __future__ import annotations

import numpy as np
import torch

from sparseseg.ltuda.data import SliceCase
from sparseseg.ltuda.model import LTUDAModel
from sparseseg.metrics import dice


def dice_per_organ(pred: np.ndarray, target: np.ndarray, labeled: np.ndarray) -> list[float]:
    """3D Dice of each labeled organ (NaN for unlabeled ones, 1 when both are empty).

    Args:
        pred: ``(S, H, W)`` class map (organ k at k).
        target: ``(S, organs, H, W)`` organ masks.
        labeled: ``(organs,)`` bool.

    Example:
        >>> pred = np.array([[[1, 1, 0, 2]]])
        >>> target = np.array([[[[1, 0, 0, 0]], [[0, 0, 0, 0]], [[0, 0, 1, 0]]]])
        >>> dice_per_organ(pred, target, np.array([True, True, False]))
        [0.6666666666666666, 0.0, nan]
    """
    return [dice(pred == k + 1, target[:, k] > 0) if labeled[k] else float("nan")
            for k in range(target.shape[1])]


@torch.no_grad()
def predict_slices(model: LTUDAModel, image: np.ndarray, classifier: str,
                   device: torch.device, batch: int = 16) -> torch.Tensor:
    """Class scores ``(S, organs + 1, H, W)`` (on CPU) for ``(S, H, W)`` normalised slices."""
    model.eval()
    out = []
    for i in range(0, image.shape[0], batch):
        x = torch.from_numpy(np.ascontiguousarray(image[i:i + batch]))[:, None].float()
        out.append(model.class_scores(x.to(device), classifier).cpu())
    return torch.cat(out)


def validate(model: LTUDAModel, cases: list[SliceCase], classifier: str,
             device: torch.device) -> np.ndarray:
    """Mean Dice per organ over the validation cases that label it (NaN if none)."""
    return validate_all(model, cases, (classifier,), device)[classifier]


@torch.no_grad()
def validate_all(model: LTUDAModel, cases: list[SliceCase], classifiers: tuple[str, ...],
                 device: torch.device, batch: int = 16) -> dict[str, np.ndarray]:
    """:func:`validate` of several classifiers, sharing one U-Net pass per batch."""
    n = model.n_organs
    model.eval()
    scores: dict[str, list[list[float]]] = {c: [[] for _ in range(n)] for c in classifiers}
    for case in cases:
        preds: dict[str, list[np.ndarray]] = {c: [] for c in classifiers}
        for i in range(0, case.image.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(case.image[i:i + batch]))[:, None]
            out = model.all_class_scores(x.float().to(device), classifiers)
            for c in classifiers:
                preds[c].append(out[c].max(1).indices.cpu().numpy())  # = argmax(1), faster
        for c in classifiers:
            pred = np.concatenate(preds[c])
            for k, d in enumerate(dice_per_organ(pred, case.target, case.labeled)):
                if d == d:
                    scores[c][k].append(d)
    return {c: np.array([np.mean(v) if v else np.nan for v in scores[c]])
            for c in classifiers}


def mean_score(val: np.ndarray) -> float:
    """Mean Dice over the organs that have a score (``-inf`` when none has).

    Example:
        >>> mean_score(np.array([0.5, np.nan, 1.0])), mean_score(np.array([np.nan]))
        (0.75, -inf)
    """
    finite = val[np.isfinite(val)]
    return float(finite.mean()) if finite.size else -np.inf
