"""Propagation: the chain driver's stop rule, clean-up, and OneSeg end to end on phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from sparseseg import oneseg
from sparseseg.io import Volume, read_label, read_volume
from sparseseg.metrics import dice
from sparseseg.oneseg.cleanup import largest_component, verify_slice
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.propagation import chain_propagate, oneseg_step


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    ii, jj = np.indices(shape)
    return (ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= radius**2


def test_stop_rule_stops_where_label_vanishes_both_directions() -> None:
    image = np.zeros((20, 20, 15), np.float32)
    ann = _disc((20, 20), (10, 10), 4).astype(np.uint8)
    calls: list[tuple[int, int]] = []

    def shrink(k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        calls.append((k, nxt))
        return ndimage.binary_erosion(current > 0).astype(np.uint8)

    out = chain_propagate(image, ann, 7, shrink, keep_largest=False)
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

    out = chain_propagate(image, ann, 4, drop_one, keep_largest=False)
    assert (out[:, :, 4] == ann).all()
    for k in range(9):
        if k != 4:
            assert not (out[:, :, k] == 1).any()
            assert (out[:, :, k] == 2).sum() == 25


def test_chain_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="annotation shape"):
        chain_propagate(np.zeros((5, 5, 3)), np.ones((4, 5), np.uint8), 1, lambda *a: a[2])
    with pytest.raises(ValueError, match="outside"):
        chain_propagate(np.zeros((5, 5, 3)), np.ones((5, 5), np.uint8), 3, lambda *a: a[2])


def test_largest_component_per_label() -> None:
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    lab[7:9, 7:9, 7:9] = 1
    lab[5, 5, 5] = 2
    out = largest_component(lab)
    assert (out == 1).sum() == 27 and (out == 2).sum() == 1


def test_verification_drops_pixels_that_look_like_the_surroundings() -> None:
    prev_img = np.zeros((30, 30), np.float32)
    prev_mask = _disc((30, 30), (15, 15), 6)
    prev_img[prev_mask] = 1.0
    new_img = prev_img.copy()
    new_mask = _disc((30, 30), (15, 15), 9)  # over-segmented into the dark surroundings
    kept = verify_slice(new_mask, new_img, prev_mask, prev_img)
    assert dice(kept, prev_mask) > 0.95


def _liver_slice_annotation(folder: Path) -> tuple[Volume, np.ndarray, int, np.ndarray]:
    """The phantom, its label, the liver's largest slice and that slice's annotation volume."""
    image = read_volume(folder / "image.nii.gz")
    truth = read_label(folder / "label.nii.gz").array
    k = int(np.argmax((truth == 1).sum(axis=(0, 1))))
    ann = np.zeros_like(truth)
    ann[:, :, k] = truth[:, :, k]
    return image, truth, k, ann


def test_oneseg_propagate_on_phantom(
    tiny_model: Path, phantom_folder: Path, tmp_path: Path
) -> None:
    image, truth, k, ann = _liver_slice_annotation(phantom_folder)
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
    image, truth, k, ann = _liver_slice_annotation(phantom_folder)
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
    volume, truth, k0, _ = _liver_slice_annotation(phantom_folder)
    image = volume.array
    model = OneSegModel.load(tiny_model)
    # Hand-made features: slice k0 + 2 looks exactly like the annotated slice k0, the last
    # propagated slice k0 + 1 like nothing in particular.
    g = torch.Generator().manual_seed(0)
    side = model.size // model.net.stride
    feats = torch.nn.functional.normalize(torch.randn(image.shape[2], 16, side, side,
                                                      generator=g), dim=1)
    feats[k0 + 2] = feats[k0]
    monkeypatch.setattr(model, "features", lambda slices: feats)
    classes = np.array([0, 1])
    liver = (truth[:, :, k0] == 1).astype(np.uint8)
    lost = np.zeros_like(liver)  # the chain has lost the liver on slice k0 + 1
    plain = oneseg_step(model, image, classes)(k0 + 1, k0 + 2, lost)
    anchored = oneseg_step(model, image, classes, anchor=(k0, liver))(k0 + 1, k0 + 2, lost)
    assert not plain.any()
    assert dice(anchored == 1, liver == 1) > 0.9
    # On the annotated slice's own step the anchor adds nothing: same result as without.
    own = oneseg_step(model, image, classes, anchor=(k0, liver))(k0, k0 + 1, liver)
    assert (own == oneseg_step(model, image, classes)(k0, k0 + 1, liver)).all()


def test_propagate_without_anchor_is_the_papers_chain(
    tiny_model: Path, phantom_folder: Path
) -> None:
    image, truth, k, ann = _liver_slice_annotation(phantom_folder)
    model = OneSegModel.load(tiny_model)
    classes = np.unique(ann).astype(np.int64)
    want = chain_propagate(image.array, ann[:, :, k], k, oneseg_step(model, image.array, classes))
    got = oneseg.propagate(model=model, image=image, annotation=ann, anchor=False, device="cpu")
    assert (got.array == want).all()
