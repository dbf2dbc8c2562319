"""The hybrid of OneSeg and registration, and registration's soft warp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sparseseg import oneseg
from sparseseg.cli import oneseg as oneseg_cli
from sparseseg.cli.main import main
from sparseseg.io import read_label
from sparseseg.metrics import dice
from sparseseg.napari import tasks
from sparseseg.oneseg import baselines
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.baselines import RegistrationPropagator
from sparseseg.oneseg.hybrid import HYBRID_WEIGHT, HybridPropagator
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.propagation import OneSegPropagator, propagate_annotation
from sparseseg_test_utils import disc, liver_slice_annotation

CLASSES = np.array([0, 1])


def _moving_disc(n: int = 8, shape: tuple[int, int] = (40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc that moves one pixel down per slice: image and label, ``(H, W, n)``."""
    rng = np.random.default_rng(0)
    label = np.stack([disc(shape, (12 + k, 20), 7) for k in range(n)], axis=-1)
    image = (label * 100.0 + rng.normal(0, 3, label.shape)).astype(np.float32)
    return image, label.astype(np.uint8)


def test_soft_registration_follows_the_moving_disc_and_gives_probabilities() -> None:
    image, label = _moving_disc()
    hard = RegistrationPropagator(image)
    soft = RegistrationPropagator(image, soft=True)
    for p in (hard, soft):
        p.prepare(CLASSES, {0: label[..., 0]})
    warped_hard = hard.probabilities(hard.scores(0, 1, label[..., 0], start=0))
    warped_soft = soft.probabilities(soft.scores(0, 1, label[..., 0], start=0))
    assert warped_soft.shape == (2, 40, 40)
    np.testing.assert_allclose(warped_soft.sum(axis=0), 1.0, atol=1e-5)
    assert ((warped_soft > 0.01) & (warped_soft < 0.99)).any()  # soft at the outline
    # Both warps move the disc onto the next slice's disc, and agree with each other.
    for warped in (warped_hard, warped_soft):
        assert dice(warped[1] > 0.5, label[..., 1] > 0) > 0.9
        assert dice(warped[1] > 0.5, label[..., 1] > 0) > dice(label[..., 0], label[..., 1])
    assert dice(warped_soft[1] > 0.5, warped_hard[1] > 0.5) > 0.95


def test_soft_registration_leaves_the_slice_outside_the_box_background() -> None:
    image, label = _moving_disc(shape=(80, 80))
    soft = RegistrationPropagator(image, soft=True, margin=4)
    soft.prepare(CLASSES, {0: label[..., 0]})
    probs = soft.probabilities(soft.scores(0, 1, label[..., 0], start=0))
    assert (probs[0, 40:, :] == 1.0).all() and (probs[1, 40:, :] == 0.0).all()


@pytest.fixture(scope="module")
def model(tiny_model: Path) -> OneSegModel:
    return OneSegModel.load(tiny_model, device="cpu")


def test_hybrid_step_is_the_weighted_mix_of_both_propagators(model, phantom_folder) -> None:
    image, truth, k, ann = liver_slice_annotation(phantom_folder)
    arr = image.array
    key = {k: ann[:, :, k]}
    hybrid = HybridPropagator.for_volume(model, arr, weight=0.7)
    own = OneSegPropagator(model, arr)
    reg = RegistrationPropagator(arr, soft=True)
    for p in (hybrid, own, reg):
        p.prepare(CLASSES, key)
    current = (ann[:, :, k] == 1).astype(np.uint8)
    with torch.inference_mode():
        mixed = hybrid.probabilities(hybrid.scores(k, k + 1, current, start=k))
        a = own.probabilities(own.scores(k, k + 1, current, start=k))
    b = reg.probabilities(reg.scores(k, k + 1, current, start=k))
    np.testing.assert_allclose(mixed, 0.7 * a + 0.3 * b, atol=1e-5)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_hybrid_refuses_weights_outside_0_1(model, weight: float) -> None:
    image, _ = _moving_disc()
    with pytest.raises(ValueError, match="weight"):
        HybridPropagator.for_volume(model, image, weight=weight)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_hybrid_at_either_end_is_that_propagator_alone(model, phantom_folder,
                                                       weight: float) -> None:
    image, _, k, ann = liver_slice_annotation(phantom_folder)
    annotation = SliceAnnotation({k: ann[:, :, k]}, n_slices=ann.shape[2])
    alone = (OneSegPropagator(model, image.array) if weight == 1.0
             else RegistrationPropagator(image.array, soft=True))
    hybrid = HybridPropagator.for_volume(model, image.array, weight=weight)
    # The propagator whose share is 0 is not run at all.
    idle = hybrid.registration if weight == 1.0 else hybrid.oneseg
    idle.prepare = idle.scores = idle.probabilities = None  # calling any would raise
    with torch.inference_mode():
        mixed = propagate_annotation(image.array, annotation, hybrid).labels
        single = propagate_annotation(image.array, annotation, alone).labels
    assert (mixed == single).all()


def test_hybrid_method_through_api_and_cli(tiny_model, phantom_folder, tmp_path) -> None:
    image, truth, k, ann = liver_slice_annotation(phantom_folder)
    result = oneseg.propagate(model=tiny_model, image=image, annotation=ann, method="hybrid",
                              device="cpu")
    assert (result.array[:, :, k] == ann[:, :, k]).all()
    assert set(np.unique(result.array)) <= set(np.unique(ann))
    assert dice(result.array == 1, truth == 1) > 0.5
    # Adaptation applies to the hybrid's model; suggest runs on its propagation.
    adapted = oneseg.propagate(model=tiny_model, image=image, annotation=ann, method="hybrid",
                               adapt=30, device="cpu")
    assert (adapted.array[:, :, k] == ann[:, :, k]).all()
    found = oneseg.suggest(model=tiny_model, image=image, annotation=ann, method="hybrid",
                           device="cpu")
    assert found.slice != k
    ann_path = tmp_path / "ann.nii.gz"
    from sparseseg.io import write_volume

    write_volume(ann_path, ann, image)
    out = tmp_path / "out.nii.gz"
    assert main(["oneseg", "propagate", "-q", "-m", str(tiny_model), "-i",
                 str(phantom_folder / "image.nii.gz"), "-a", str(ann_path), "-o", str(out),
                 "--method", "hybrid", "--device", "cpu"]) == 0
    assert (read_label(out).array == result.array).all()


def test_hybrid_weight_option(tiny_model, phantom_folder, tmp_path, capsys) -> None:
    image, _, k, ann = liver_slice_annotation(phantom_folder)
    from sparseseg.io import write_volume

    ann_path = tmp_path / "ann.nii.gz"
    write_volume(ann_path, ann, image)
    base = ["oneseg", "propagate", "-q", "-m", str(tiny_model), "-i",
            str(phantom_folder / "image.nii.gz"), "-a", str(ann_path), "--device", "cpu"]
    # All OneSeg: the hybrid's labels are OneSeg's; all registration: soft registration's.
    assert main([*base, "-o", str(tmp_path / "one.nii.gz")]) == 0
    assert main([*base, "-o", str(tmp_path / "h1.nii.gz"), "--method", "hybrid",
                 "--hybrid-weight", "1"]) == 0
    assert (read_label(tmp_path / "h1.nii.gz").array
            == read_label(tmp_path / "one.nii.gz").array).all()
    assert main([*base, "-o", str(tmp_path / "h0.nii.gz"), "--method", "hybrid",
                 "--hybrid-weight", "0"]) == 0
    with torch.inference_mode():
        want = propagate_annotation(
            image.array, SliceAnnotation({k: ann[:, :, k]}, n_slices=ann.shape[2]),
            RegistrationPropagator(image.array, soft=True)).labels
    assert (read_label(tmp_path / "h0.nii.gz").array == want).all()
    capsys.readouterr()
    for bad in ("1.5", "-0.2", "nan"):
        out = tmp_path / f"bad{bad}.nii.gz"
        assert main([*base, "-o", str(out), "--method", "hybrid", "--hybrid-weight", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "--hybrid-weight" in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_method_lists_outside_the_core_match_it() -> None:
    """The CLI and napari keep their own lists (importing the core loads torch)."""
    assert oneseg_cli.METHOD_CHOICES == baselines.METHODS
    assert oneseg_cli.PROPAGATOR_CHOICES == baselines.PROPAGATORS
    assert tasks.MODEL_METHODS == baselines.MODEL_METHODS
    assert oneseg_cli.HYBRID_WEIGHT == HYBRID_WEIGHT
