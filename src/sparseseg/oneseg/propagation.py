"""Propagate annotated slices through the volume, slice by slice.

:func:`propagate_annotation` is the driver every propagator shares. For each group of labels
drawn on the same slices (:meth:`~sparseseg.oneseg.annotation.SliceAnnotation.groups`):

* beyond the outermost annotated slices, labels are propagated outwards slice by slice, each
  step from the last propagated slice (OneSeg's chain);
* between two annotated slices ``a < b``, one chain runs forwards from ``a`` and one
  backwards from ``b``; on every slice in between their class probabilities are fused
  (:data:`FUSIONS`; by default weighted by distance, ``(b - k) / (b - a)`` for the chain from
  ``a``) and the label is their argmax.

In every chain all labels of the group move at once; a label that vanishes stays gone in that
chain, and a chain stops once every label has vanished. Annotated slices are kept exactly.
Optional clean-up: Sli2Vol's per-step verification and a final 3D largest-component pass that
keeps every component touching an annotated pixel. Groups are merged by taking, where two
claim a voxel, the label propagated with the higher probability.

A :class:`Propagator` turns the labels of one slice into class probabilities on another:
:class:`OneSegPropagator` copies them by local attention (below); the training-free baselines
live in :mod:`sparseseg.oneseg.baselines`.

OneSeg's step copies at the feature resolution (1/4 of the network's input): the previous
slice's hard label is area-averaged to that grid as a soft one-hot, copied by local attention,
and up-sampled bilinearly to the native grid. By default each step also copies from the
chain's annotated slice (one softmax over both windows,
:func:`~sparseseg.oneseg.attention.multi_reference_copy`): the clinician's label never
drifts, so target pixels that still match it take its value, which holds the chain where it
would wander. Measured (docs/benchmarks.md): on LeftAtrium it lifts the mean Dice from the
screened slice by about 0.03 and leaves the largest-slice start as it was; on a whole-body CT
started from an organ's largest slice it lets labels run further past the organ's end (-0.03).

Besides the labels, :class:`Propagation` records per slice how uncertain the result is, which
:mod:`sparseseg.oneseg.suggestion` uses to suggest the next slice to annotate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.io.axes import SLICE_AXIS, from_slices, slice_shape, to_slices
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.attention import LocalAttentionCopy
from sparseseg.oneseg.cleanup import largest_component, verify_slice
from sparseseg.oneseg.intensity import (
    INTENSITY_WEIGHT,
    ClassProbabilities,
    fit_intensity_model,
    refine_labels,
)
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.preprocess import normalise_intensity

FUSIONS = ("union", "distance", "nearest")
"""How the two chains between annotated slices ``a < b`` are joined on slice ``k``: ``union``
(default): each label's probability is the larger of the two chains', background's the smaller,
so a pixel is labeled when either chain labels it; ``distance``: probabilities averaged with
weights ``(b - k) / (b - a)`` and ``(k - a) / (b - a)``; ``nearest``: the chain from the nearer
annotated slice. Between an annotated outline and a slice annotated empty (the labels end there)
union keeps the outline's chain right up to the empty slice, which acts as a wall; distance and
nearest let the labels fade out half way. On LeftAtrium (10 held-out cases, OneSeg, 1 / 2 / 3
evenly spaced slices) the atrium's two ends marked as empty slices lift the mean Dice from
0.827 / 0.845 / 0.871 to 0.844 / 0.859 / 0.882 with the wall (no case lower) and change it to
0.777 / 0.842 / 0.873 with the half-way fade. A chain that starts from a small outline
cannot grow it much, so between a large and a small annotated outline the copy of the large one
is needed right up to the small one: on LeftAtrium (6 held-out cases, OneSeg, 2 / 3 evenly
spaced slices) union scored 0.871 / 0.890 mean Dice, distance 0.832 / 0.877, nearest 0.833 /
0.874, a geometric mean 0.814 / 0.860 (docs/benchmarks.md)."""

UNCERTAIN = 0.05
"""A pixel whose winning class has probability below ``1 - UNCERTAIN`` counts as uncertain."""

ProgressFunction = Callable[[int, int], None]
"""``progress(done, total)``: slices propagated so far, and the total expected."""


class Propagator(ABC):
    """Turns the labels of one slice into class probabilities on another slice.

    :meth:`prepare` is called once per label group, then :meth:`scores` once per step; the
    driver keeps what :meth:`scores` returns (it may be smaller than the slice, as OneSeg's
    feature-grid copies are) and asks :meth:`probabilities` for the native-grid probabilities.
    """

    classes: np.ndarray

    intensity_decision: bool = True
    """Whether :func:`propagate_annotation`'s ``intensity_weight`` applies to this
    propagator's labels (``False``: a method meant to give its copies unchanged)."""

    def prepare(self, classes: np.ndarray, keys: Mapping[int, np.ndarray]) -> None:
        """Start a label group.

        Args:
            classes: Label values of the probability channels, background (0) first.
            keys: The group's annotated slices, ``{index: 2D label}`` (other groups' labels
                removed).
        """
        self.classes = classes

    @abstractmethod
    def scores(self, k: int, nxt: int, current: np.ndarray, *, start: int) -> Any:
        """Copy ``current`` (labels of slice ``k``) onto slice ``nxt``.

        Args:
            k: The slice whose labels are known.
            nxt: The neighbouring slice to label.
            current: Labels of slice ``k``.
            start: The annotated slice the chain started from.
        """

    @abstractmethod
    def probabilities(self, scores: Any) -> np.ndarray:
        """``(len(classes), H, W)`` float32 class probabilities on the native grid."""


def _one_hot(label: np.ndarray, classes: np.ndarray, size: tuple[int, int] | None = None
             ) -> torch.Tensor:
    """``(1, D, h, w)`` soft one-hot of ``label`` over ``classes``, area-averaged to ``size``."""
    lab = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))
    lut = torch.zeros(int(max(classes.max(), lab.max())) + 1, dtype=torch.long)
    lut[torch.from_numpy(classes).long()] = torch.arange(len(classes))
    onehot = F.one_hot(lut[lab], len(classes)).permute(2, 0, 1)[None].float()
    return onehot if size is None else F.interpolate(onehot, size=size, mode="area")


def one_hot(label: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``(len(classes), H, W)`` float32 one-hot of a label slice (values outside ``classes``
    count as background)."""
    return _one_hot(label, classes)[0].numpy()


class SliceFeatures:
    """A volume's slice features, computed in blocks the first time a slice is asked for.

    A propagation chain stops where its labels vanish, so slices far from the structure are
    often never needed: on a whole-body CT an organ spans a fifth of the slices.

    Args:
        model: The model.
        slices: The volume's prepared slices (:meth:`~sparseseg.oneseg.model.OneSegModel.
            slice_tensors`).
        block: Slices encoded together.
    """

    def __init__(self, model: OneSegModel, slices: torch.Tensor, *, block: int = 8) -> None:
        self.model = model
        self.slices = slices
        self.block = block
        self._blocks: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.slices)

    def _get(self, b: int) -> torch.Tensor:
        if b not in self._blocks:
            self._blocks[b] = self.model.features(self.slices[b * self.block:
                                                              (b + 1) * self.block])
        return self._blocks[b]

    def __getitem__(self, k: int) -> torch.Tensor:
        """Features of slice ``k``, ``(1, E, fh, fw)``."""
        if not 0 <= k < len(self):
            raise IndexError(f"slice {k} outside 0..{len(self) - 1}")
        b, i = divmod(k, self.block)
        return self._get(b)[i : i + 1]

    def all(self) -> torch.Tensor:
        """Features of every slice, ``(N, E, fh, fw)``."""
        return torch.cat([self._get(b) for b in range(-(-len(self) // self.block))])


class OneSegPropagator(Propagator):
    """OneSeg's step: encode slices (once each, when first needed), then copy labels by local
    attention.

    Args:
        model: The trained model.
        image: The volume.
        temperature: Softmax temperature of the label copy (default: the model's).
        anchor: Every step also copies from the chain's annotated slice (one softmax over
            both references). ``False``: from the last slice only, as in the paper.
        axis: Slice axis.
    """

    def __init__(self, model: OneSegModel, image: np.ndarray, *,
                 temperature: float | None = None, anchor: bool = True,
                 axis: int = SLICE_AXIS) -> None:
        self.model = model
        self.anchor = anchor
        self.slice_features = SliceFeatures(model, model.slice_tensors(image))
        self.grid: tuple[int, int] = (0, 0)  # feature map size, set by prepare()
        self.plane = slice_shape(image.shape, axis)
        self.copy = LocalAttentionCopy(
            radius=model.net.copy.radius,
            temperature=temperature or model.propagation_temperature,
        )
        self.anchors: dict[int, torch.Tensor] = {}

    @property
    def feats(self) -> torch.Tensor:
        """Features of every slice, ``(N, E, fh, fw)`` (all computed on first use)."""
        return self.slice_features.all()

    def prepare(self, classes: np.ndarray, keys: Mapping[int, np.ndarray]) -> None:
        """Encode the group's annotated slices as anchor values."""
        super().prepare(classes, keys)
        self.grid = tuple(self.slice_features[min(keys)].shape[-2:])
        self.anchors = {k: _one_hot(v, classes, self.grid).to(self.model.device)
                        for k, v in keys.items()}

    def scores(self, k: int, nxt: int, current: np.ndarray, *, start: int) -> torch.Tensor:
        """Copied soft one-hot on the feature grid, ``(D, fh, fw)``."""
        feats = self.slice_features
        keys = [feats[k]]
        values = [_one_hot(current, self.classes, self.grid).to(self.model.device)]
        if self.anchor and start != k and start in self.anchors:
            keys.append(feats[start])
            values.append(self.anchors[start])
        with torch.no_grad():
            return self.copy.copy_from(feats[nxt], keys, values, background=0)[0]

    def probabilities(self, scores: torch.Tensor) -> np.ndarray:
        """Up-sampled bilinearly to the slice."""
        with torch.no_grad():
            full = F.interpolate(scores[None], size=self.plane, mode="bilinear",
                                 align_corners=False)
        return full[0].float().cpu().numpy()


@dataclass
class Propagation:
    """The result of :func:`propagate_annotation`.

    Attributes:
        labels: Label volume, indexed like the image.
        annotation: The annotation it was propagated from.
        uncertainty: Per slice, the summed doubt ``1 - p(winning class)`` of its pixels
            (pixels the propagation did not reach count 0; annotated slices 0).
        region: Per slice, pixels that are labeled or uncertain (see :data:`UNCERTAIN`).
        disagreement: Per slice between two annotated slices, the pixels on which the two
            chains' labels differ (0 elsewhere).
        area: Per slice, labeled (non-zero) pixels of the result.
    """

    labels: np.ndarray
    annotation: SliceAnnotation
    uncertainty: np.ndarray
    region: np.ndarray
    disagreement: np.ndarray
    area: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """Per slice, ``1 -`` the mean doubt over its labeled or uncertain pixels (1 where
        there is nothing to doubt, and on annotated slices)."""
        return 1.0 - np.where(self.region > 0, self.uncertainty / np.maximum(self.region, 1), 0.0)


@dataclass
class _Link:
    """One propagated slice of a chain, as kept for fusion."""

    label: np.ndarray
    present: np.ndarray
    scores: Any
    verified: bool


class _GroupRun:
    """Propagates one label group (labels drawn on the same slices)."""

    def __init__(self, propagator: Propagator, classes: np.ndarray, keys: dict[int, np.ndarray],
                 n: int, *, fusion: str, norm: np.ndarray | None,
                 tick: Callable[[], None], keep_probabilities: bool = False) -> None:
        self.p = propagator
        self.classes = classes
        self.channel = np.zeros(int(classes.max()) + 1, np.int64)  # label value -> channel
        self.channel[classes] = np.arange(len(classes))
        self.keys = keys
        self.n = n
        self.fusion = fusion
        self.norm = norm
        self.tick = tick
        plane = next(iter(keys.values())).shape
        dtype = next(iter(keys.values())).dtype
        self.labels = np.zeros((n, *plane), dtype)
        self.prob = np.zeros((n, *plane), np.float16)  # probability of the winning label
        self.uncertainty = np.zeros(n)
        self.region = np.zeros(n)
        self.disagreement = np.zeros(n)
        # every non-background class's probability, kept for the intensity refinement
        self.class_prob = (ClassProbabilities(len(classes) - 1, (n, *plane))
                           if keep_probabilities else None)

    def _probs(self, link: _Link | None, raw: np.ndarray | None = None) -> np.ndarray:
        """A link's probabilities, vanished labels' share moved to background (``raw``: the
        propagator's probabilities of the link when already at hand; no link: all
        background)."""
        if link is None:
            return one_hot(np.zeros(self.labels.shape[1:], self.labels.dtype), self.classes)
        if link.verified:
            return one_hot(link.label, self.classes)
        probs = raw if raw is not None else self.p.probabilities(link.scores)
        gone = ~np.isin(self.classes, link.present)
        if gone.any():  # a vanished label's share goes to background
            probs[0] += probs[gone].sum(axis=0)
            probs[gone] = 0.0
        return probs

    def _chain(self, start: int, stop: int, direction: int):
        """Yield ``(index, _Link, probabilities)`` from ``start`` (excluded) towards ``stop``
        (excluded); the probabilities are the propagator's, before :meth:`_probs`."""
        current, k = self.keys[start], start
        while k + direction != stop:
            present = np.unique(current)
            if present.max(initial=0) == 0:
                return
            nxt = k + direction
            scores = self.p.scores(k, nxt, current, start=start)
            probs = self.p.probabilities(scores)
            new = self.classes[probs.argmax(0)].astype(current.dtype, copy=False)
            new[~np.isin(new, present)] = 0  # a vanished label never comes back
            verified = False
            if self.norm is not None:
                for v in present[present != 0]:
                    mask = new == v
                    kept = verify_slice(mask, self.norm[nxt], current == v, self.norm[k])
                    new[mask & ~kept] = 0
                    new[kept & (new == 0)] = v
                verified = True
            yield nxt, _Link(new, present, None if verified else scores, verified), probs
            self.tick()
            current, k = new, nxt

    def _store(self, k: int, probs: np.ndarray, label: np.ndarray) -> None:
        win = np.take_along_axis(probs, self.channel[label][None], axis=0)[0]
        doubt = 1.0 - probs.max(axis=0)
        self.labels[k] = label
        self.prob[k] = win
        self.uncertainty[k] = float(doubt.sum())
        self.region[k] = float(((label != 0) | (doubt > UNCERTAIN)).sum())
        if self.class_prob is not None:
            self.class_prob.set(k, probs[1:])

    def refine(self, image: np.ndarray, weight: float) -> None:
        """Re-decide the labels with the scan's intensities (:mod:`sparseseg.oneseg.intensity`);
        ``image`` is the ``(N, H, W)`` image. Annotated slices stay as drawn."""
        assert self.class_prob is not None
        values = [int(v) for v in self.classes[1:]]
        models = [fit_intensity_model(image, {k: s == v for k, s in self.keys.items()})
                  for v in values]
        labels, prob = refine_labels(self.class_prob, values, models, image, weight=weight)
        self.class_prob = None
        for k, s in self.keys.items():
            labels[k] = s
            prob[k] = 1.0
        self.labels = labels.astype(self.labels.dtype, copy=False)
        self.prob = prob.astype(np.float16)

    def run(self) -> None:
        keys = sorted(self.keys)
        for k in keys:
            self.labels[k] = self.keys[k]
            self.prob[k] = 1.0
            if self.class_prob is not None:
                self.class_prob.set(k, self.keys[k][None] == self.classes[1:, None, None])
        for start, stop, direction in ((keys[0], -1, -1), (keys[-1], self.n, 1)):
            for k, link, raw in self._chain(start, stop, direction):
                self._store(k, self._probs(link, raw), link.label)
        for a, b in zip(keys[:-1], keys[1:], strict=True):
            if b - a < 2:
                continue
            # The backward chain is kept as links (OneSeg's: feature-grid scores), not as
            # full-size probabilities, until the forward chain reaches each slice.
            backward = {k: link for k, link, _ in self._chain(b, a, -1)}
            for k, fwd, raw in self._chain(a, b, 1):
                self._fuse(k, a, b, self._probs(fwd, raw), fwd, backward.pop(k, None))
            for k, bwd in backward.items():  # the forward chain stopped before these
                self._fuse(k, a, b, self._probs(None), None, bwd)

    def _fuse(self, k: int, a: int, b: int, pf: np.ndarray, fwd: _Link | None,
              bwd: _Link | None) -> None:
        """Join the forward chain's probabilities ``pf`` (link ``fwd``) with the backward
        chain's link ``bwd`` on slice ``k`` between annotated slices ``a < b``
        (``self.fusion``)."""
        pb = self._probs(bwd)
        wf = (b - k) / (b - a)
        fusion = self.fusion
        if fusion == "nearest":
            probs = pf if wf > 0.5 else pb if wf < 0.5 else 0.5 * (pf + pb)
        elif fusion == "distance":
            probs = wf * pf + (1 - wf) * pb
        else:  # union
            probs = np.maximum(pf, pb)
            probs[0] = np.minimum(pf[0], pb[0])
            probs /= probs.sum(axis=0, keepdims=True)
        label = self.classes[probs.argmax(0)].astype(self.labels.dtype, copy=False)
        lf = fwd.label if fwd is not None else np.zeros_like(label)
        lb = bwd.label if bwd is not None else np.zeros_like(label)
        self._store(k, probs, label)
        self.disagreement[k] = float((lf != lb).sum())


def propagate_annotation(
    image: np.ndarray,
    annotation: SliceAnnotation,
    propagator: Propagator,
    *,
    fusion: str = "union",
    verify: bool = False,
    keep_largest: bool = True,
    intensity_weight: float = INTENSITY_WEIGHT,
    axis: int = SLICE_AXIS,
    progress: ProgressFunction | None = None,
) -> Propagation:
    """Propagate the annotated slices through a volume with a slice-to-slice propagator.

    Args:
        image: The volume, indexed ``[i, j, k]``.
        annotation: The annotated slices (on ``image``'s slices).
        propagator: Copies labels from slice to slice.
        fusion: How chains meeting between two annotated slices are joined (:data:`FUSIONS`).
        verify: Apply Sli2Vol's per-step verification.
        keep_largest: Keep only the largest 3D component of each label afterwards (every
            component that touches an annotated pixel is kept).
        intensity_weight: Weight of the scan's own intensities, learned from the annotated
            slices, in the final label decision (:mod:`sparseseg.oneseg.intensity`; ``0``:
            each pixel takes the propagation's most probable label, unsmoothed). Not applied
            to a propagator whose ``intensity_decision`` is ``False`` (``copy``).
        axis: Slice axis.
        progress: Called after each propagated slice with ``(done, total)``.

    Returns:
        The label volume with the annotation's label values, and per-slice uncertainty.
    """
    n = image.shape[axis]
    plane = slice_shape(image.shape, axis)
    if annotation.plane != plane:
        raise ValueError(f"annotation shape {annotation.plane} differs from slice shape {plane}")
    if annotation.n_slices != n:
        raise ValueError(f"annotation has {annotation.n_slices} slices, the image {n}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r} ({', '.join(FUSIONS)})")
    if intensity_weight < 0:
        raise ValueError(f"intensity_weight must be >= 0, got {intensity_weight}")
    norm = to_slices(normalise_intensity(image), axis) if verify else None
    use_intensities = intensity_weight > 0 and propagator.intensity_decision
    slices = to_slices(image, axis) if use_intensities else None
    groups = annotation.groups()
    total = len(annotation.indices) + sum(
        (n - len(keys)) + sum(max(b - a - 1, 0) for a, b in zip(keys[:-1], keys[1:],
                                                                  strict=True))
        for _, keys in groups)
    done = len(annotation.indices)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(min(done, total), total)

    if progress:
        progress(done, total)
    runs = []
    for values, keys in groups:
        classes = np.array([0, *values], dtype=np.int64)
        key_labels = {}
        for k in keys:
            s = annotation.slices[k]
            key_labels[k] = np.where(np.isin(s, values), s, 0).astype(annotation.dtype)
        propagator.prepare(classes, key_labels)
        run = _GroupRun(propagator, classes, key_labels, n, fusion=fusion, norm=norm,
                        tick=tick, keep_probabilities=slices is not None)
        run.run()
        if slices is not None:
            run.refine(slices, intensity_weight)
        if keep_largest:
            anchor = np.zeros_like(run.labels)
            for k, s in key_labels.items():
                anchor[k] = s
            cleaned = largest_component(run.labels, anchor=anchor)
            run.prob[(cleaned == 0) & (run.labels != 0)] = 0
            run.labels = cleaned
        runs.append(run)
    if progress:
        progress(total, total)
    labels = _merge(runs, annotation)
    stats = {name: sum(getattr(r, name) for r in runs)
             for name in ("uncertainty", "region", "disagreement")}
    for k in annotation.indices:
        for name in stats:
            stats[name][k] = 0.0
    area = (labels != 0).reshape(n, -1).sum(axis=1).astype(float)
    return Propagation(labels=from_slices(labels, axis), annotation=annotation, area=area,
                       **stats)


def _merge(runs: Sequence[_GroupRun], annotation: SliceAnnotation) -> np.ndarray:
    """Join the groups' labels (higher probability wins) and restore the annotated pixels."""
    if len(runs) == 1:
        out = runs[0].labels
    else:
        out = np.zeros_like(runs[0].labels)
        best = np.zeros(out.shape, np.float16)
        for run in runs:
            take = (run.labels != 0) & (run.prob > best)
            out[take] = run.labels[take]
            best[take] = run.prob[take]
    return annotation.restore(out.astype(annotation.dtype, copy=False))
