"""Annotation-guided test-time adaptation: tune a copy of a OneSeg model to the drawn labels.

OneSeg's own loss (reconstructing a slice's intensities from a neighbour's) does not, on a
volume of a few thick slices, pull the features toward what separates the organs: adapted
with it alone the default model loses 0.02-0.05 Dice on AbdomenTS (docs/benchmarks.md). The
annotated slices say what must be separated, so each step here adds a **label cycle**:

1. the label of an annotated slice ``a`` (one-hot, area-averaged to the feature grid) is
   copied by local attention to a neighbour ``b = a +- d`` (``d <= max_gap``), at the
   propagation temperature;
2. the result is copied back from ``b`` to ``a``;
3. the soft Dice of what comes back against the drawn label is the loss.

A label that leaks into neighbouring tissue on the way out comes back leaked; one that fades
comes back faded. Alone, the cycle lets features grow organ-shaped blobs that travel too far
along the chain (on AbdomenTS CT the spleen ran 8 slices past its end), so the intensity
reconstruction of the same pairs is kept beside it, weighted so the two are of a size
(``reconstruction_weight``): it ties the features to the image content.

Only the last stage of the encoder and the projection are tuned (``trainable``): the early
layers hold generic edge and texture filters that one volume's few slices cannot improve.
Batch-norm statistics stay frozen. The run is a fixed number of Adam steps (reproducible for
a given seed), cut short by an optional time cap.

Measured on AbdomenTS, every organ from its largest slice, all organs annotated at once
(``python -m benchmarks.default_model --parts abdomen``): see docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparseseg.oneseg.attention import multi_reference_copy
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.propagation import _one_hot

log = logging.getLogger(__name__)

TRAINABLE = ("last", "head", "all")


@dataclass(frozen=True)
class GuidedAdaptConfig:
    """Settings of annotation-guided adaptation.

    Args:
        steps: Adam steps.
        lr: Adam learning rate (constant).
        max_gap: Largest distance from an annotated slice to the neighbour its label is
            copied to.
        reconstruction_weight: Weight of the intensity reconstruction beside the label cycle
            (``0``: the label cycle alone).
        trainable: ``last`` (last encoder stage and projection), ``head`` (projection only)
            or ``all``.
        max_slices: Annotated slices used per step (a random subset when there are more).
        seconds: Stop early after this many seconds (``None``: run every step).
        seed: Random seed (neighbours and subsets).
    """

    steps: int = 10
    lr: float = 3e-4
    max_gap: int = 3
    reconstruction_weight: float = 50.0
    trainable: str = "last"
    max_slices: int = 8
    seconds: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"adaptation needs at least one step, got {self.steps}")
        if self.max_gap < 1:
            raise ValueError(f"max_gap must be >= 1, got {self.max_gap}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"the time cap must be positive, got {self.seconds}")


@dataclass(frozen=True)
class GuidedStep:
    """Progress reported after every step.

    Attributes:
        step: Steps done, this one included.
        steps: Steps of the run.
        label_loss: The label cycle's loss (1 - soft Dice).
        reconstruction_loss: Mean absolute intensity error of the copy.
        elapsed: Seconds since the start.
    """

    step: int
    steps: int
    label_loss: float
    reconstruction_loss: float
    elapsed: float


def soft_dice_loss(pred: torch.Tensor, target: torch.Tensor, present: torch.Tensor
                   ) -> torch.Tensor:
    """``1 -`` mean soft Dice over the (sample, class) pairs marked ``present``.

    Args:
        pred: ``(B, D, h, w)`` soft labels.
        target: ``(B, D, h, w)`` soft labels.
        present: ``(B, D)`` boolean, the pairs to score.
    """
    inter = (pred * target).sum((2, 3))
    total = pred.sum((2, 3)) + target.sum((2, 3))
    dice = 2 * inter / total.clamp_min(1e-6)
    return 1 - dice[present].mean()


def label_cycle(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    labels_a: torch.Tensor,
    *,
    radius: int,
    temperature: float,
) -> torch.Tensor:
    """Labels copied from slices ``a`` to slices ``b`` and back: ``(B, D, h, w)``."""
    there = multi_reference_copy(feats_b, [feats_a], [labels_a], radius=radius,
                                 temperature=temperature)
    return multi_reference_copy(feats_a, [feats_b], [there], radius=radius,
                                temperature=temperature)


def _trainable(net: nn.Module, which: str) -> list[nn.Parameter]:
    """Freeze every parameter but those ``which`` names; return those."""
    encoder = net.encoder
    modules = {"all": [net], "head": [encoder.project],
               "last": [encoder.layers[-1], encoder.project]}[which]
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _annotated_labels(annotation: Mapping[int, np.ndarray], grid: tuple[int, int]
                      ) -> tuple[list[int], torch.Tensor]:
    """Indices of the slices holding a label and their one-hot labels on the feature grid,
    ``(K, D, h, w)`` over background and every drawn label value."""
    keys = sorted(k for k, s in annotation.items() if s.any())
    values = sorted({int(v) for k in keys for v in np.unique(annotation[k])} | {0})
    classes = np.asarray(values)
    labels = torch.cat([_one_hot(annotation[k], classes, grid) for k in keys])
    return keys, labels


def adapt_to_annotation(
    model: OneSegModel,
    slices: torch.Tensor,
    annotation: Mapping[int, np.ndarray],
    *,
    config: GuidedAdaptConfig | None = None,
    callback: Callable[[GuidedStep], None] | None = None,
) -> OneSegModel:
    """A copy of ``model`` tuned so that the drawn labels survive a copy to their neighbours
    and back (see the module notes).

    Args:
        model: The model to start from (not modified).
        slices: The volume's prepared slices ``(N, 1, S, S)`` (``model.slice_tensors``).
        annotation: ``{slice index: 2D label}`` on the volume's in-plane grid (a
            :class:`~sparseseg.oneseg.annotation.SliceAnnotation`'s ``slices``); slices
            annotated empty are not used.
        config: Settings (default :class:`GuidedAdaptConfig`).
        callback: Called after every step.

    Returns:
        The adapted model, with an ``adapted`` record in its ``extra`` settings.

    Raises:
        ValueError: Fewer than two slices, or no slice holding a label.
    """
    cfg = config or GuidedAdaptConfig()
    n = len(slices)
    if n < 2:
        raise ValueError("adaptation needs a volume with at least two slices")
    if not any(s.any() for s in annotation.values()):
        raise ValueError("annotation-guided adaptation needs a slice holding a label")
    start = time.monotonic()
    device = model.device
    net = copy.deepcopy(model.net).to(device)
    net.eval()  # batch-norm statistics stay frozen
    params = _trainable(net, cfg.trainable)
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    radius, temperature = net.copy.radius, model.propagation_temperature
    grid = tuple(s // net.stride for s in slices.shape[-2:])
    keys, labels = _annotated_labels(annotation, grid)
    labels = labels.to(device)
    present = labels[:, 1:].flatten(2).amax(2) > 0  # (K, D - 1): the drawn labels
    pooled = F.avg_pool2d(slices, net.stride)  # intensities on the feature grid
    rng = np.random.default_rng(cfg.seed)
    step = 0
    for step in range(1, cfg.steps + 1):
        chosen = np.arange(len(keys))
        if len(chosen) > cfg.max_slices:
            chosen = np.sort(rng.choice(chosen, cfg.max_slices, replace=False))
        a = np.asarray(keys)[chosen]
        gap = rng.integers(1, cfg.max_gap + 1, len(a)) * rng.choice([-1, 1], len(a))
        b = np.where((a + gap < 0) | (a + gap >= n), a - gap, a + gap).clip(0, n - 1)
        feats = net(slices[np.concatenate([a, b])])
        fa, fb = feats[: len(a)], feats[len(a):]
        back = label_cycle(fa, fb, labels[chosen], radius=radius, temperature=temperature)
        label_loss = soft_dice_loss(back[:, 1:], labels[chosen][:, 1:], present[chosen])
        loss = label_loss
        recon = torch.zeros(())
        if cfg.reconstruction_weight > 0:
            copied = multi_reference_copy(fb, [fa], [pooled[a]], radius=radius,
                                          temperature=net.copy.temperature)
            recon = (copied - pooled[b]).abs().mean()
            loss = loss + cfg.reconstruction_weight * recon
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if callback is not None:
            callback(GuidedStep(step=step, steps=cfg.steps, label_loss=float(label_loss.detach()),
                                reconstruction_loss=float(recon.detach()),
                                elapsed=time.monotonic() - start))
        if cfg.seconds is not None and time.monotonic() - start >= cfg.seconds:
            break
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    seconds = time.monotonic() - start
    log.info("adapted the model to the annotation: %d steps in %.1f s", step, seconds)
    record = {**asdict(cfg), "guided": True, "steps_done": step, "seconds_used": round(seconds, 1)}
    return OneSegModel(net, size=model.size, device=device,
                       extra={**model.extra, "adapted": record})
