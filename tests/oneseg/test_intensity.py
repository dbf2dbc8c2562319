"""The intensity decision: histograms from the annotated slices move the propagated boundary."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sparseseg.cli import oneseg as oneseg_cli
from sparseseg.oneseg import intensity
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.baselines import CopyPropagator, HardPropagator
from sparseseg.oneseg.intensity import (
    ClassProbabilities,
    IntensityModel,
    fit_intensity_model,
    gaussian_blur,
    refine_labels,
)
from sparseseg.oneseg.propagation import propagate_annotation
from sparseseg_test_utils import disc


def _noisy(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bright (100) structure on a dark (20) background, with noise."""
    rng = np.random.default_rng(seed)
    return np.where(mask, 100.0, 20.0) + rng.normal(0, 5, mask.shape)


def test_blur_equals_scipy_with_replicated_edges() -> None:
    x = np.random.default_rng(1).random((6, 17, 23)).astype(np.float32)
    for sigma in ((1.0, 1.0, 1.0), (0.0, 1.0, 2.0), (2.5, 0.0, 0.0)):
        want = ndimage.gaussian_filter(x, sigma, mode="nearest")
        assert np.allclose(gaussian_blur(x, sigma), want, atol=1e-5), sigma


def test_class_probabilities_keep_only_the_boxes_where_they_are_non_zero() -> None:
    dense = np.zeros((2, 6, 50, 60), np.float32)
    dense[0, 1:4, 10:14, 20:23] = 0.5
    dense[0, 2, 30, 40] = 0.25  # a second spot on one slice widens that slice's box
    dense[1, 5, 0:2, 58:60] = 1.0
    kept = ClassProbabilities.from_array(dense)
    assert len(kept) == 2 and kept.shape == (6, 50, 60)
    stored = sum(a.size for crops in kept._crops for _, _, a in crops.values())
    assert stored < 0.02 * dense.size  # not N x H x W per class
    assert kept.box(0, (0, 0, 0)) == (slice(1, 4), slice(10, 31), slice(20, 41))
    assert kept.box(1, (2, 3, 3)) == (slice(3, 6), slice(0, 5), slice(55, 60))  # cut to shape
    for c in range(2):
        box = kept.box(c, (1, 2, 2))
        assert np.array_equal(kept.dense(c, box), dense[c][box])
    kept.set(2, np.zeros((2, 50, 60)))  # a slice that lost the class
    assert kept.box(0, (0, 0, 0)) == (slice(1, 4), slice(10, 14), slice(20, 23))
    assert ClassProbabilities(1, (3, 4, 4)).box(0, (1, 1, 1)) is None


def test_model_favours_the_structures_intensities() -> None:
    mask = disc((40, 40), (20, 20), 8)
    image = _noisy(mask)[None]
    model = fit_intensity_model(image, {0: mask})
    assert isinstance(model, IntensityModel)
    ratio = model(np.array([20.0, 60.0, 100.0, 500.0, -500.0]))
    assert ratio[2] > 2 and ratio[0] < -2  # structure's intensity for, surroundings' against
    assert ratio[0] < ratio[1] < ratio[2]  # between them (the blurred edge): in between
    assert ratio[3] == 0 and ratio[4] == 0  # beyond the sampled range: no say
    # Nothing drawn, or nothing around it: no model.
    assert fit_intensity_model(image, {0: np.zeros_like(mask)}) is None
    assert fit_intensity_model(image, {0: np.ones_like(mask)}) is None


def test_refinement_moves_the_boundary_to_the_structures_edge_and_no_further() -> None:
    n, shape = 5, (48, 48)
    truth = disc(shape, (24, 24), 10)
    image = np.stack([_noisy(truth, seed) for seed in range(n)])
    # An under-segmenting propagation: sure inside radius 7, unsure (0.3) out to radius 13.
    p = np.where(disc(shape, (24, 24), 7), 0.95, np.where(disc(shape, (24, 24), 13), 0.3, 0))
    class_prob = np.repeat(p[None, None], n, axis=1).astype(np.float16)
    far = disc(shape, (4, 4), 3)  # bright but never reached by the propagation
    image[:, far] = 100.0
    model = fit_intensity_model(image, {2: truth})
    labels, prob = refine_labels(class_prob, [3], [model], image)
    plain, _ = refine_labels(class_prob, [3], [None], image)
    assert set(np.unique(labels)) == {0, 3}
    got = labels[2] == 3
    assert (got & truth).sum() / truth.sum() > 0.97  # the unsure ring inside the disc joins
    assert (got & ~truth).sum() < 0.03 * truth.sum()  # the dark ring outside does not
    assert not labels[:, far].any()
    assert (plain[2] == 3).sum() < 0.6 * truth.sum()  # without intensities: the sure core
    assert (prob[labels == 3] > intensity.REACH).all() and (prob[labels == 0] == 0).all()


def test_each_label_of_a_group_is_decided_by_its_own_intensities() -> None:
    shape = (40, 60)
    left, right = disc(shape, (20, 15), 8), disc(shape, (20, 45), 8)
    image = np.where(left, 150.0, np.where(right, 60.0, 10.0))[None].repeat(3, axis=0)
    image += np.random.default_rng(2).normal(0, 3, image.shape)
    # Each class unsure over a wide box around its disc (reaching the other disc).
    p1 = np.zeros(shape)
    p1[5:36, 0:55] = 0.3
    p2 = np.zeros(shape)
    p2[5:36, 5:60] = 0.3
    class_prob = np.stack([p1, p2])[:, None].repeat(3, axis=1).astype(np.float16)
    models = [fit_intensity_model(image, {1: left}), fit_intensity_model(image, {1: right})]
    labels, _ = refine_labels(class_prob, [1, 2], models, image)
    assert (labels[1][left] == 1).mean() > 0.95 and (labels[1][right] == 2).mean() > 0.95
    assert (labels[1][~(left | right)] == 0).mean() > 0.97


class ShrinkingPropagator(HardPropagator):
    """Copies the label eroded by one pixel: a chain that under-segments."""

    def scores(self, k, nxt, current, *, start):
        return np.where(ndimage.binary_erosion(current > 0), current, 0)


def test_propagation_with_intensities_recovers_what_the_chain_loses() -> None:
    n, shape = 9, (40, 40)
    truth = disc(shape, (20, 20), 9)
    volume = np.stack([_noisy(truth, s) for s in range(n)], axis=-1)  # indexed [i, j, k]
    ann = SliceAnnotation({4: truth.astype(np.uint8) * 2}, n_slices=n)
    plain = propagate_annotation(volume, ann, ShrinkingPropagator(), intensity_weight=0)
    refined = propagate_annotation(volume, ann, ShrinkingPropagator())
    for result in (plain, refined):
        assert np.array_equal(result.labels[:, :, 4], ann.slices[4])  # drawn slice exact
        assert set(np.unique(result.labels)) <= {0, 2}

    def dice(labels):
        got, want = labels > 0, np.repeat(truth[..., None], n, axis=-1)
        return 2 * (got & want).sum() / (got.sum() + want.sum())

    assert dice(plain.labels) < 0.85
    assert dice(refined.labels) > dice(plain.labels) + 0.05


def test_copy_stays_a_copy_whatever_the_weight() -> None:
    n, shape = 7, (40, 40)
    truth = disc(shape, (20, 20), 9)
    volume = np.stack([_noisy(truth, s) for s in range(n)], axis=-1)
    drawn = disc(shape, (20, 20), 6).astype(np.uint8)  # smaller than the bright disc
    ann = SliceAnnotation({3: drawn}, n_slices=n)
    assert not CopyPropagator().intensity_decision
    got = propagate_annotation(volume, ann, CopyPropagator(), intensity_weight=2.0).labels
    assert all(np.array_equal(got[:, :, k], drawn) for k in range(n))

    class RefinedCopy(CopyPropagator):
        intensity_decision = True

    # The same copies with the decision on grow towards the bright disc.
    refined = propagate_annotation(volume, ann, RefinedCopy(), intensity_weight=2.0).labels
    assert (refined[:, :, 0] > 0).sum() > drawn.sum()


def test_negative_weight_is_refused() -> None:
    ann = SliceAnnotation({1: np.ones((4, 4), np.uint8)}, n_slices=3)
    with pytest.raises(ValueError, match="intensity_weight"):
        propagate_annotation(np.zeros((4, 4, 3)), ann, ShrinkingPropagator(),
                             intensity_weight=-1)


def test_cli_default_is_the_cores() -> None:
    assert oneseg_cli.INTENSITY_WEIGHT == intensity.INTENSITY_WEIGHT
