"""The dataset-level refinement: fusion, slice stacks, training, and refining one volume."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from sparseseg.errors import ModelError
from sparseseg.metrics import dice
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.refinement import (
    RefineConfig,
    SliceStack,
    class_indices,
    compact,
    fuse,
    fused_labels,
    load_refiner,
    network_doubt,
    new_network,
    refine_tuned,
    refine_tuned_with_doubt,
    refine_volume,
    save_refiner,
    train_refiner,
    train_rounds,
)
from sparseseg_test_utils import disc

PLANE = (32, 32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _disc_volume(seed: int, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc drifting through ``n`` slices over a noisy background; its mask."""
    rng = np.random.default_rng(seed)
    cy, cx, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(5, 8)
    mask = np.stack([disc(PLANE, (cy + 0.3 * k, cx - 0.2 * k), r - 0.15 * k) for k in range(n)])
    image = 100 + 40 * mask + rng.normal(0, 4, mask.shape)
    return image.astype(np.float32), mask.astype(np.uint8)


def _distance_to_outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return np.where(mask, ndimage.distance_transform_edt(mask),
                    ndimage.distance_transform_edt(~mask))


def test_fuse_lets_the_network_decide_near_outlines_only():
    label = disc(PLANE, (16, 16), 9)[None]
    distance = _distance_to_outline(label[0])
    # A network 99 % sure overrules the propagation where the smoothed labels are less
    # sure than that: within ~2.3 sigma of an outline.
    sure_background = np.stack([np.full(PLANE, 0.99), np.full(PLANE, 0.01)])[None]
    fused = fuse(label.astype(np.int64), sure_background, sigma=2.0)[0]
    assert fused[label[0] & (distance >= 6)].all()  # deep inside: the propagation stands
    assert not fused[label[0] & (distance <= 1)].any()  # at the outline: the network
    sure_foreground = sure_background[:, ::-1]
    fused = fuse(label.astype(np.int64), sure_foreground, sigma=2.0)[0]
    outside = ~label[0]
    assert fused[outside & (distance <= 1)].all()
    assert not fused[outside & (distance >= 6)].any()
    # Unsmoothed, the propagated labels are sure everywhere: a network short of certainty
    # changes nothing.
    assert np.array_equal(fuse(label.astype(np.int64), sure_background, sigma=0)[0], label[0])


def test_fuse_weighs_the_propagation():
    label = disc(PLANE, (16, 16), 9)[None]
    probs = np.stack([np.full(PLANE, 0.999), np.full(PLANE, 0.001)])[None]  # sure: background
    # Unsmoothed labels (floored at 1e-4) outweigh a network 99.9 % sure at full weight, not
    # at half weight; at weight 0 the network decides alone.
    assert np.array_equal(fuse(label.astype(np.int64), probs, sigma=0, weight=1.0)[0],
                          label[0])
    assert not fuse(label.astype(np.int64), probs, sigma=0, weight=0.5).any()
    undecided = np.full((1, 2, *PLANE), 0.5)
    undecided[0, :, :, :4] = np.array([0.4, 0.6])[:, None, None]
    alone = fuse(label.astype(np.int64), undecided, sigma=2.0, weight=0)[0]
    assert np.array_equal(alone, undecided[0].argmax(0))


def test_fuse_picks_among_several_classes():
    label = np.zeros((1, *PLANE), np.int64)
    label[0, 4:14, 4:14], label[0, 16:26, 4:14] = 1, 2
    probs = np.full((1, 3, *PLANE), 1 / 3)  # a network without an opinion...
    probs[0, :, 12:14, 4:14] = np.array([0.01, 0.01, 0.98])[:, None, None]  # ...but here
    fused = fuse(label, probs, sigma=2.0)[0]
    assert (fused[12:14, 5:13] == 2).all()  # near class 2's outline: the network's class
    # elsewhere the propagated labels, but for their corners (an undecided network leaves
    # the smoothed labels, which round corners off)
    away = np.ones(PLANE, bool)
    away[11:15] = False
    for value in (0, 1, 2):
        away &= _distance_to_outline(label[0] == value) >= 2
    assert away.sum() > 500
    assert np.array_equal(fused[away], label[0][away])


def test_class_indices_maps_values_and_refuses_unknown_ones():
    classes = np.array([0, 3, 205])
    assert class_indices(np.array([[0, 205], [3, 3]]), classes).tolist() == [[0, 2], [1, 1]]
    with pytest.raises(ValueError, match="outside the classes"):
        class_indices(np.array([0, 4]), classes)


def test_slice_stack_neighbours_and_native_size_probabilities():
    image, _ = _disc_volume(0, n=5)
    image[:, :20] += 30  # not square after the resize
    stack = SliceStack(image[:, :, :24], size=16)
    x = stack.inputs([0, 4])
    assert x.shape == (2, 3, 16, 16)
    assert torch.equal(x[0, 0], stack.slices[0]) and torch.equal(x[0, 2], stack.slices[1])
    assert torch.equal(x[1, 2], stack.slices[4])  # the last slice repeats itself
    target = stack.target(np.pad(np.ones((5, 2, 2), np.int64), ((0, 0), (0, 30), (0, 22))))
    assert target.shape == (5, 16, 16) and target[:, 0, 0].eq(1).all()
    assert target[:, 15, 15].eq(0).all()

    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), 2, *x.shape[-2:])
            out[:, 1, :, :8] = 5.0  # left half: class 1
            return out

    probs = stack.probabilities(Constant(), [1, 2], torch.device("cpu"))
    assert probs.shape == (2, 2, 32, 24)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # mirror-averaged: left and right halves get the same mean foreground probability
    assert probs[:, 1, :, :12].mean() == pytest.approx(probs[:, 1, :, 12:].mean(), abs=0.02)


def test_config_refuses_bad_settings():
    for bad in ({"steps": 0}, {"finetune_steps": -1}, {"sigma": -1.0}, {"max_time": 0.0},
                {"size": 8}, {"sigma": float("nan")}, {"propagation_weight": -0.5},
                {"rounds": 0}, {"z_sigma": -1.0}):
        name, value = next(iter(bad.items()))
        with pytest.raises(ValueError, match=f"^{name} must be .*, got {value}$"):
            RefineConfig(**bad)


def _trained(n_volumes: int = 4, steps: int = 150) -> torch.nn.Module:
    config = RefineConfig(steps=steps, size=32, batch_size=8, seed=0)
    stacks, targets, marks = [], [], []
    for seed in range(n_volumes):
        image, mask = _disc_volume(seed)
        stack = SliceStack(image, size=32)
        stacks.append(stack)
        targets.append(stack.target(mask.astype(np.int64)))
        marks.append([5])
    return train_refiner(stacks, targets, marks, n_classes=2, config=config)


@pytest.fixture(scope="module")
def trained(one_torch_thread: None) -> torch.nn.Module:
    return _trained()


def test_training_learns_the_labels_of_unseen_volumes(trained):
    image, mask = _disc_volume(99)
    stack = SliceStack(image, size=32)
    probs = stack.probabilities(trained, np.arange(len(stack)), torch.device("cpu"))
    assert dice(probs.argmax(1) == 1, mask) > 0.9


def test_training_stops_at_max_time():
    image, mask = _disc_volume(0)
    stack = SliceStack(image, size=32)
    calls = []
    config = RefineConfig(steps=10_000, max_time=1e-6, size=32, batch_size=2)
    train_refiner([stack], [stack.target(mask.astype(np.int64))], [[0]], n_classes=2,
                  config=config, progress=lambda done, total: calls.append(done))
    assert calls == [1]  # one step always, then the time is up


def test_training_decays_the_learning_rate(monkeypatch):
    seen = []

    class Recording(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    image, mask = _disc_volume(0)
    stack = SliceStack(image, size=32)
    config = RefineConfig(steps=8, size=32, batch_size=2, lr=1e-3)
    train_refiner([stack], [stack.target(mask.astype(np.int64))], [[0]], n_classes=2,
                  config=config)
    assert len(seen) == 8 and seen[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))  # a cosine down...
    assert seen[4] == pytest.approx(0.5e-3) and seen[-1] < 0.05e-3  # ...to near 0


def test_later_rounds_train_on_the_refined_labels(monkeypatch):
    from sparseseg.oneseg import refinement

    volumes = [_disc_volume(seed) for seed in range(2)]
    stacks = [SliceStack(image, size=32) for image, _ in volumes]
    props = [mask for _, mask in volumes]
    anns = [SliceAnnotation({3: mask[3]}, len(mask)) for _, mask in volumes]
    seen_targets, calls = [], []
    real_train = refinement.train_refiner

    def recording_train(stacks, targets, *args, start_from=None, **kwargs):
        seen_targets.append((start_from is not None, [t.clone() for t in targets]))
        return real_train(stacks, targets, *args, start_from=start_from, **kwargs)

    refined_marker = np.zeros_like(props[0])  # what "refinement" returns: all background
    monkeypatch.setattr(refinement, "train_refiner", recording_train)
    monkeypatch.setattr(refinement, "refine_volume",
                        lambda net, stack, prop, ann, classes, **kw: refined_marker)
    config = RefineConfig(steps=3, rounds=2, size=32, batch_size=2)
    net = train_rounds(stacks, props, anns, np.array([0, 1]), config=config,
                       progress=lambda done, total: calls.append((done, total)))
    assert isinstance(net, torch.nn.Module)
    assert calls == [(k, 6) for k in range(1, 7)]
    (first_from, first), (second_from, second) = seen_targets
    assert not first_from and second_from  # round 2 goes on from round 1's network
    assert all(torch.equal(t, s.target(p.astype(np.int64)))
               for t, s, p in zip(first, stacks, props, strict=True))
    assert all(int(t.sum()) == 0 for t in second)  # round 2's targets: the refined labels


def test_rounds_read_each_volume_once_a_round_and_keep_small_targets(monkeypatch):
    """``oneseg refine`` hands over label files read on access: each is read once per round
    and not kept, and the training targets are stored as uint8."""
    from collections.abc import Sequence

    from sparseseg.oneseg import refinement

    volumes = [_disc_volume(seed) for seed in range(3)]
    reads = []

    class OnDisk(Sequence):
        def __len__(self) -> int:
            return len(volumes)

        def __getitem__(self, i):
            reads.append(i)
            return volumes[i][1].copy()

    seen = []
    real_train = refinement.train_refiner

    def recording_train(stacks, targets, *args, **kwargs):
        seen.append([t.dtype for t in targets])
        return real_train(stacks, targets, *args, **kwargs)

    monkeypatch.setattr(refinement, "train_refiner", recording_train)
    stacks = [SliceStack(image, size=32) for image, _ in volumes]
    anns = [SliceAnnotation({3: mask[3]}, len(mask)) for _, mask in volumes]
    config = RefineConfig(steps=2, rounds=2, size=32, batch_size=2, finetune_steps=1)
    train_rounds(stacks, OnDisk(), anns, np.array([0, 1]), config=config)
    assert reads == [0, 1, 2, 0, 1, 2]
    assert seen == [[torch.uint8] * 3] * 2
    with pytest.raises(ValueError, match="one propagated label stack"):
        train_rounds(stacks, [volumes[0][1]], anns, np.array([0, 1]), config=config)
    many = torch.tensor([0, 300])
    assert compact(torch.tensor([0, 2])).dtype == torch.uint8 and compact(many) is many


@pytest.mark.parametrize("z_sigma", [0.0, 1.5])
def test_labels_and_doubt_from_one_pass_equal_the_two_passes(trained, z_sigma):
    image, mask = _disc_volume(5, n=12)
    stack = SliceStack(image, size=32)
    wrong = np.roll(mask, 3, axis=2)  # a propagation off by 3 pixels
    ann = SliceAnnotation({4: mask[4]}, len(mask))
    config = RefineConfig(size=32, z_sigma=z_sigma, batch_size=5)
    classes = np.array([0, 1])
    labels, doubt = refine_tuned_with_doubt(trained, stack, wrong, ann, classes, config=config)
    assert np.array_equal(labels, refine_tuned(trained, stack, wrong, ann, classes,
                                               config=config))
    assert np.allclose(doubt, network_doubt(trained, stack, wrong, ann, classes, batch_size=5))
    assert doubt[4] == 0 and doubt.max() > 0
    assert refine_tuned_with_doubt(trained, stack, wrong, ann, classes, config=config,
                                   doubt=False)[1] is None


def test_start_from_leaves_the_given_network_unchanged(trained):
    image, mask = _disc_volume(3)
    stack = SliceStack(image, size=32)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    config = RefineConfig(steps=2, size=32, batch_size=2)
    went_on = train_refiner([stack], [stack.target(mask.astype(np.int64))], [[0]],
                            n_classes=2, config=config, start_from=trained)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, went_on.state_dict()[k]) for k, v in before.items())


def test_a_saved_network_loads_as_it_was(trained, tmp_path):
    save_refiner(tmp_path / "net", trained, classes=np.array([0, 1]), size=32)
    net, classes, size = load_refiner(tmp_path / "net")
    assert classes.tolist() == [0, 1] and size == 32 and not net.training
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(net(x), trained(x))


@pytest.mark.parametrize("fault", ["classes", "neighbours", "kind", "weights"])
def test_loading_refuses_a_folder_that_is_not_this_network(tmp_path, fault):
    folder = save_refiner(tmp_path / "net", new_network(3), classes=np.array([0, 1, 4]),
                          size=32)
    config = json.loads((folder / "config.json").read_text())
    if fault == "classes":  # two outputs named for three weights' worth of classes
        config["classes"] = [0, 1]
        message = "config and weights do not match"
    elif fault == "neighbours":
        config["neighbours"] = [0]
        message = "neighbours [0] are not [-1, 0, 1]"
    elif fault == "kind":
        config["kind"] = "oneseg"
        message = "is a 'oneseg' model, expected 'oneseg-refiner'"
    else:
        (folder / "model.safetensors").write_bytes(b"not weights")
        message = "corrupt weights"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=re.escape(message)):
        load_refiner(folder)


class _Threshold(torch.nn.Module):
    """A stand-in network: foreground where the middle input slice is brighter than ``t``."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, 1] - self.t) * 20
        return torch.stack([-fg, fg], 1)


def _gap_volume() -> tuple[SliceStack, np.ndarray]:
    """A disc through 12 slices, faint on slice 6; its stack and mask."""
    mask = np.repeat(disc(PLANE, (16, 16), 8)[None], 12, 0)
    image = np.where(mask, 1.0, 0.0)
    image[6] *= 0.4
    return SliceStack(image.astype(np.float32), size=32), mask.astype(np.uint8)


def test_fused_labels_smooth_the_network_across_slices():
    stack, mask = _gap_volume()
    disc_value, faint_value = float(stack.slices[0].max()), float(stack.slices[6].max())
    net = _Threshold((disc_value + faint_value) / 2)  # misses the faint slice
    ann = SliceAnnotation({0: mask[0]}, len(mask))
    classes = np.array([0, 1])
    alone = fused_labels(net, stack, mask, ann, classes, sigma=2.0, weight=0, z_sigma=0)
    assert not alone[6].any() and alone[5].sum() > 150
    smoothed = fused_labels(net, stack, mask, ann, classes, sigma=2.0, weight=0, z_sigma=1.5)
    assert dice(smoothed[6], mask[6]) > 0.9  # its neighbours vote the faint slice back in
    # batches see their neighbours: any batch size gives the whole volume's smoothing
    for batch_size in (1, 4, 5):
        assert np.array_equal(
            fused_labels(net, stack, mask, ann, classes, sigma=2.0, weight=0, z_sigma=1.5,
                         batch_size=batch_size), smoothed)


def test_refine_volume_corrects_a_systematic_error_and_keeps_annotated_slices(trained):
    from scipy import ndimage

    image, mask = _disc_volume(50)
    annotated = [2, 7]
    grown = ndimage.binary_dilation(mask, np.ones((1, 5, 5), bool)).astype(np.uint8)
    ann = SliceAnnotation({k: mask[k] * 1 for k in annotated}, len(mask))
    propagated = grown.copy()
    for k in annotated:
        propagated[k] = mask[k]
    stack = SliceStack(image, size=32)
    config = RefineConfig(size=32, finetune_steps=5)
    refined = refine_volume(trained, stack, propagated, ann, np.array([0, 1]), config=config)
    assert refined.dtype == propagated.dtype and refined.shape == propagated.shape
    for k in annotated:
        assert np.array_equal(refined[k], mask[k])
    assert dice(propagated, mask) < 0.75
    assert dice(refined, mask) > 0.9  # an untrained network's fusion: 0.80


def test_cli_default_steps_are_the_core_default():
    from sparseseg.cli import oneseg as oneseg_cli

    assert RefineConfig().steps == oneseg_cli.REFINE_STEPS  # the CLI's torch-free copies
    assert RefineConfig().propagation_weight == oneseg_cli.REFINE_PROPAGATION_WEIGHT


def test_network_doubt_is_where_the_network_and_the_propagation_disagree(trained):
    image, mask = _disc_volume(60)
    annotated = [2, 7]
    ann = SliceAnnotation({k: mask[k] * 1 for k in annotated}, len(mask))
    stack = SliceStack(image, size=32)
    right = network_doubt(trained, stack, mask, ann, np.array([0, 1]))
    lost = mask.copy()
    lost[5] = 0  # a slice the propagation lost
    doubt = network_doubt(trained, stack, lost, ann, np.array([0, 1]))
    assert doubt.shape == (len(mask),)
    assert np.all(doubt[annotated] == 0)
    assert np.array_equal(np.delete(doubt, 5), np.delete(right, 5))
    assert doubt[5] - right[5] > 0.8 * mask[5].sum()  # the lost disc's pixels
