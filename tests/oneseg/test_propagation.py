"""Propagation: the chain driver's stop rule, clean-up, and OneSeg end to end on phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from sparseseg import oneseg
from sparseseg.io import read_label, read_volume
from sparseseg.metrics import dice
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.baselines import CopyPropagator, HardPropagator
from sparseseg.oneseg.cleanup import largest_component, verify_slice
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.propagation import (
    FUSIONS,
    OneSegPropagator,
    SliceFeatures,
    propagate_annotation,
)
from sparseseg_test_utils import disc, liver_slice_annotation


class StepPropagator(HardPropagator):
    """A hard-label propagator from a plain ``step(k, nxt, current)`` function."""

    def __init__(self, step) -> None:
        self.step = step

    def scores(self, k, nxt, current, *, start):
        return self.step(k, nxt, current)


def _run(image, slices: dict, step, **kwargs) -> np.ndarray:
    kwargs.setdefault("intensity_weight", 0)  # the chain and fusion themselves
    ann = SliceAnnotation(slices, n_slices=image.shape[2])
    return propagate_annotation(image, ann, StepPropagator(step), **kwargs).labels


def test_stop_rule_stops_where_label_vanishes_both_directions() -> None:
    image = np.zeros((20, 20, 15), np.float32)
    ann = disc((20, 20), (10, 10), 4).astype(np.uint8)
    calls: list[tuple[int, int]] = []

    def shrink(k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        calls.append((k, nxt))
        return ndimage.binary_erosion(current > 0).astype(np.uint8)

    out = _run(image, {7: ann}, shrink, keep_largest=False)
    filled = [k for k in range(15) if out[:, :, k].any()]
    assert 7 in filled and filled == list(range(filled[0], filled[-1] + 1))
    assert len(filled) < 15  # the label vanished before the volume ended
    # Once empty, no further step is taken in that direction.
    assert max(n for _, n in calls) == filled[-1] + 1
    assert min(n for _, n in calls) == filled[0] - 1


def test_vanished_label_never_comes_back_and_others_go_on() -> None:
    image = np.zeros((16, 16, 9), np.float32)
    ann = np.zeros((16, 16), np.uint8)
    ann[2:6, 2:6] = 1
    ann[9:14, 9:14] = 2

    def drop_one(k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        new = current.copy()
        if abs(nxt - 4) == 1:
            new[new == 1] = 0  # label 1 vanishes right after the annotation
        if abs(nxt - 4) == 2:
            new[2:6, 2:6] = 1  # ...and the step tries to bring it back later
        return new

    out = _run(image, {4: ann}, drop_one, keep_largest=False)
    assert (out[:, :, 4] == ann).all()
    for k in range(9):
        if k != 4:
            assert not (out[:, :, k] == 1).any()
            assert (out[:, :, k] == 2).sum() == 25


def test_two_annotated_slices_fuse_by_distance_and_stay_exact() -> None:
    """Between slices 2 and 10 the copy of slice 2's square wins up to the middle, then the
    copy of slice 10's; beyond them each propagates outwards; both are kept exactly."""
    image = np.zeros((20, 20, 13), np.float32)
    low = np.zeros((20, 20), np.uint8)
    low[2:8, 2:8] = 1
    high = np.zeros((20, 20), np.uint8)
    high[10:18, 10:18] = 1
    out = _run(image, {2: low, 10: high}, lambda k, nxt, cur: cur.copy(), keep_largest=False,
               fusion="distance")
    assert (out[:, :, 2] == low).all() and (out[:, :, 10] == high).all()
    for k in (0, 1, 3, 4, 5):
        assert (out[:, :, k] == low).all(), k
    for k in (7, 8, 9, 11, 12):
        assert (out[:, :, k] == high).all(), k
    # The default, union: between them both copies; beyond them each one alone.
    out = _run(image, {2: low, 10: high}, lambda k, nxt, cur: cur.copy(), keep_largest=False)
    for k in range(3, 10):
        assert (out[:, :, k] == np.maximum(low, high)).all(), k
    assert (out[:, :, 1] == low).all() and (out[:, :, 11] == high).all()


def test_each_label_propagates_between_its_own_slices() -> None:
    """Label 1 drawn on slices 2 and 10, label 2 on slice 6 only: label 2 is not cut off by
    the slices where only label 1 is drawn, and label 1 is fused between its two slices."""
    image = np.zeros((20, 20, 13), np.float32)
    liver = np.zeros((20, 20), np.uint8)
    liver[2:8, 2:8] = 1
    spleen = np.zeros((20, 20), np.uint8)
    spleen[12:18, 12:18] = 2
    result = propagate_annotation(
        image, SliceAnnotation({2: liver, 10: liver.copy(), 6: spleen}, n_slices=13),
        StepPropagator(lambda k, nxt, cur: cur.copy()), keep_largest=False,
        intensity_weight=0)
    out = result.labels
    for k in range(13):
        assert (out[2:8, 2:8, k] == 1).all(), k  # label 1 everywhere (copied unchanged)
        assert (out[12:18, 12:18, k] == 2).all(), k  # label 2 through slices 2 and 10 too
    assert result.disagreement.sum() == 0  # both chains between 2 and 10 agree


@pytest.mark.parametrize("fusion", ["union", "distance"])
def test_a_slice_annotated_empty_stops_every_label(fusion: str) -> None:
    image = np.zeros((10, 10, 12), np.float32)
    a = np.zeros((10, 10), np.uint8)
    a[2:5, 2:5], a[6:9, 6:9] = 1, 2
    out = _run(image, {3: a, 8: np.zeros_like(a)}, lambda k, nxt, cur: cur.copy(),
               keep_largest=False, fusion=fusion)
    assert not out[:, :, 8:].any()  # nothing at or beyond the empty slice
    assert (out[:, :, :4] == a[:, :, None]).all()  # below: copied outwards as usual
    if fusion == "union":  # the drawn chain runs right up to the empty slice
        assert (out[:, :, 3:8] == a[:, :, None]).all()
    else:  # the labels fade by distance, kept near slice 3, gone near slice 8
        assert (out[:, :, 5] == a).all() and not out[:, :, 6].any()


def test_chains_that_disagree_are_recorded_and_split_at_the_middle() -> None:
    image = np.zeros((10, 10, 11), np.float32)
    a = np.zeros((10, 10), np.uint8)
    a[0:5] = 1
    b = np.zeros((10, 10), np.uint8)
    b[5:] = 1
    result = propagate_annotation(image, SliceAnnotation({0: a, 10: b}, n_slices=11),
                                  StepPropagator(lambda k, nxt, cur: cur.copy()),
                                  keep_largest=False, fusion="distance", intensity_weight=0)
    assert (result.disagreement[1:10] == 100).all()
    assert result.disagreement[0] == 0 and result.disagreement[10] == 0
    assert (result.labels[:, :, 3] == a).all() and (result.labels[:, :, 7] == b).all()
    # One-hot chains weighted 0.7 / 0.3 on slice 3, 0.5 / 0.5 in the middle: doubt 0.3, 0.5.
    assert result.confidence[3] == pytest.approx(0.7, abs=1e-3)
    assert result.confidence[5] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_keeps_annotated_slices(fusion: str) -> None:
    image = np.zeros((10, 10, 9), np.float32)
    a = np.zeros((10, 10), np.uint8)
    a[1:4, 1:4] = 1
    out = _run(image, {1: a, 7: np.roll(a, 6, axis=0)},
               lambda k, nxt, cur: np.roll(cur, 1 if nxt > k else -1, axis=0), fusion=fusion)
    assert (out[:, :, 1] == a).all() and (out[:, :, 7] == np.roll(a, 6, axis=0)).all()
    assert (out[4:7, 1:4, 4] == 1).all() and out[:, :, 4].sum() == 9  # moved half way, whole


def test_progress_reaches_the_total() -> None:
    seen: list[tuple[int, int]] = []
    image = np.zeros((6, 6, 10), np.float32)
    a = np.ones((6, 6), np.uint8)
    _run(image, {2: a, 6: a}, lambda k, nxt, cur: cur.copy(),
         progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and all(d <= t for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_chain_refuses_bad_shapes() -> None:
    ann = SliceAnnotation({1: np.ones((4, 5), np.uint8)}, n_slices=3)
    with pytest.raises(ValueError, match="annotation shape"):
        propagate_annotation(np.zeros((5, 5, 3)), ann, CopyPropagator())
    ann = SliceAnnotation({1: np.ones((5, 5), np.uint8)}, n_slices=4)
    with pytest.raises(ValueError, match="slices"):
        propagate_annotation(np.zeros((5, 5, 3)), ann, CopyPropagator())


def test_largest_component_per_label() -> None:
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    lab[7:9, 7:9, 7:9] = 1
    lab[5, 5, 5] = 2
    out = largest_component(lab)
    assert (out == 1).sum() == 27 and (out == 2).sum() == 1


def test_verification_drops_pixels_that_look_like_the_surroundings() -> None:
    prev_img = np.zeros((30, 30), np.float32)
    prev_mask = disc((30, 30), (15, 15), 6)
    prev_img[prev_mask] = 1.0
    new_img = prev_img.copy()
    new_mask = disc((30, 30), (15, 15), 9)  # over-segmented into the dark surroundings
    kept = verify_slice(new_mask, new_img, prev_mask, prev_img)
    assert dice(kept, prev_mask) > 0.95


def test_oneseg_propagate_on_phantom(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    image, truth, k, ann = liver_slice_annotation(phantom_folder)
    result = oneseg.propagate(
        model=tiny_model, image=image, annotation=ann, output=tmp_path / "out.nii.gz", device="cpu"
    )
    written = read_label(tmp_path / "out.nii.gz")
    assert written.same_geometry(image)
    assert (written.array == result.array).all()
    assert set(np.unique(result.array)) <= set(np.unique(ann))
    assert (result.array[:, :, k] == ann[:, :, k]).all()
    # Even a barely trained model carries the liver through neighbouring slices.
    assert dice(result.array == 1, truth == 1) > 0.5


@pytest.mark.parametrize("method", ["registration", "copy"])
def test_baselines_need_no_model(phantom_folder: Path, method: str) -> None:
    image, truth, k, ann = liver_slice_annotation(phantom_folder)
    result = oneseg.propagate(image=image, annotation=ann, method=method)
    assert dice(result.array == 1, truth == 1) > 0.5


def test_largest_component_keeps_every_annotated_component() -> None:
    lab = np.zeros((12, 12, 6), np.uint8)
    lab[1:4, 1:4, :] = 3  # right kidney
    lab[8:10, 8:10, :] = 3  # left kidney, smaller, same label
    anchor = np.zeros_like(lab)
    anchor[:, :, 2] = lab[:, :, 2]
    assert (largest_component(lab, anchor=anchor) == lab).all()
    assert (largest_component(lab) == 3).sum() == 9 * 6


def test_anchor_copies_from_the_annotated_slice_when_the_chain_has_lost_the_label(
    tiny_model: Path, phantom_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume, truth, k0, _ = liver_slice_annotation(phantom_folder)
    image = volume.array
    model = OneSegModel.load(tiny_model)
    # Hand-made features: slice k0 + 2 looks exactly like the annotated slice k0, the last
    # propagated slice k0 + 1 like nothing in particular.
    g = torch.Generator().manual_seed(0)
    side = model.size // model.net.stride
    feats = torch.nn.functional.normalize(torch.randn(image.shape[2], 16, side, side,
                                                      generator=g), dim=1)
    feats[k0 + 2] = feats[k0]
    # The propagator encodes blocks of slices when first needed: hand it the block's features.
    prepared = model.slice_tensors(image)

    def features(slices: torch.Tensor) -> torch.Tensor:
        first = next(i for i in range(len(prepared)) if torch.equal(prepared[i], slices[0]))
        return feats[first : first + len(slices)]

    monkeypatch.setattr(model, "features", features)
    classes = np.array([0, 1])
    liver = (truth[:, :, k0] == 1).astype(np.uint8)
    lost = np.zeros_like(liver)  # the chain has lost the liver on slice k0 + 1

    def step(anchor: bool, k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        prop = OneSegPropagator(model, image, anchor=anchor)
        prop.prepare(classes, {k0: liver})
        probs = prop.probabilities(prop.scores(k, nxt, current, start=k0))
        return classes[probs.argmax(0)]

    assert not step(False, k0 + 1, k0 + 2, lost).any()
    assert dice(step(True, k0 + 1, k0 + 2, lost) == 1, liver == 1) > 0.9
    # On the annotated slice's own step the anchor adds nothing: same result as without.
    assert (step(True, k0, k0 + 1, liver) == step(False, k0, k0 + 1, liver)).all()


def test_propagate_without_anchor_is_the_papers_chain(
    tiny_model: Path, phantom_folder: Path
) -> None:
    image, truth, k, ann = liver_slice_annotation(phantom_folder)
    model = OneSegModel.load(tiny_model)
    got = oneseg.propagate(model=model, image=image, annotation=ann, anchor=False,
                           intensity_weight=0, device="cpu")
    anchored = oneseg.propagate(model=model, image=image, annotation=ann, intensity_weight=0,
                                device="cpu")
    # The paper's chain by hand: each slice copied from the previous one only, argmax.
    classes = np.unique(ann).astype(np.int64)
    prop = OneSegPropagator(model, image.array, anchor=False)
    prop.prepare(classes, {k: ann[:, :, k]})
    want = np.zeros_like(ann)
    want[:, :, k] = ann[:, :, k]
    for direction in (-1, 1):
        j = k
        while 0 <= j + direction < ann.shape[2] and want[:, :, j].any():
            probs = prop.probabilities(prop.scores(j, j + direction, want[:, :, j], start=k))
            want[:, :, j + direction] = classes[probs.argmax(0)]
            j += direction
    want = largest_component(want, anchor=np.where(np.arange(ann.shape[2]) == k, ann, 0))
    assert (got.array == want).all()
    assert not (anchored.array == want).all()


def test_slice_features_encode_only_the_blocks_asked_for(tiny_model: Path,
                                                          phantom_folder: Path) -> None:
    model = OneSegModel.load(tiny_model)
    image = read_volume(phantom_folder / "image.nii.gz").array
    slices = model.slice_tensors(image)
    encoded = []
    features = SliceFeatures(model, slices, block=4)
    original = model.features
    model.features = lambda s: encoded.append(len(s)) or original(s)  # type: ignore[method-assign]
    everything = original(slices)
    assert torch.allclose(features[5], everything[5:6], atol=1e-5)
    assert torch.allclose(features[6], everything[6:7], atol=1e-5)
    assert encoded == [4]  # slices 4..7, once
    with pytest.raises(IndexError):
        features[len(slices)]
    assert torch.allclose(features.all(), everything, atol=1e-5)
    assert sum(encoded) == len(slices)  # every other block once, block 1 not again


def test_propagation_encodes_only_the_slices_its_chains_reach(tiny_model: Path,
                                                             phantom_folder: Path) -> None:
    volume, _, k0, ann = liver_slice_annotation(phantom_folder)
    # 24 more slices like the last one above the volume, and a slice annotated empty 6 above
    # the liver's: no chain goes past that one (how far a chain runs on its own depends on
    # the barely trained model, and so on the machine that trained it).
    image = np.concatenate([volume.array, np.repeat(volume.array[:, :, -1:], 24, axis=2)], 2)
    mask = np.concatenate([ann, np.zeros((*ann.shape[:2], 24), ann.dtype)], axis=2)
    annotation = SliceAnnotation({k0: mask[:, :, k0], k0 + 6: np.zeros_like(mask[:, :, k0])},
                                 n_slices=image.shape[2])
    model = OneSegModel.load(tiny_model)
    encoded = []
    original = model.features
    model.features = lambda s: encoded.append(len(s)) or original(s)  # type: ignore[method-assign]
    result = propagate_annotation(image, annotation, OneSegPropagator(model, image))
    reached = np.flatnonzero(result.labels.any(axis=(0, 1)))
    assert sum(encoded) <= (reached.max() // 8 + 2) * 8 < image.shape[2]
    # The same labels as with every slice encoded up front.
    model.features = original  # type: ignore[method-assign]
    eager = OneSegPropagator(model, image)
    eager.slice_features.all()
    assert np.array_equal(propagate_annotation(image, annotation, eager).labels, result.labels)


@pytest.mark.parametrize(("shape", "fill"), [((40, 40), 0.3), ((12, 14, 16), 0.1)])
def test_components_are_numbered_like_scipy_with_full_connectivity(shape, fill) -> None:
    from sparseseg.oneseg.cleanup import _components

    rng = np.random.default_rng(len(shape))
    mask = rng.random(shape) < fill  # many small components, some joined only by a corner
    expected, n = ndimage.label(mask, structure=np.ones((3,) * len(shape), bool))
    got, m = _components(mask)
    assert n > 10 and m == n
    assert (got == expected).all()


def test_largest_component_joins_diagonal_neighbours() -> None:
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[1, 1, 1] = lab[2, 2, 2] = lab[3, 3, 3] = 1  # one 26-connected chain of 3
    lab[5, 0, 5] = lab[5, 1, 5] = 1  # a face-connected pair
    out = largest_component(lab)
    assert out[1, 1, 1] == out[2, 2, 2] == out[3, 3, 3] == 1
    assert out[5, 0, 5] == out[5, 1, 5] == 0
