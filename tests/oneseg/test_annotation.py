"""Finding the one annotated slice, and refusing annotations that are not one slice."""

from __future__ import annotations

import numpy as np
import pytest

from sparseseg.errors import InputError
from sparseseg.io.volume import Volume
from sparseseg.oneseg.annotation import annotated_slice


def _vol(arr: np.ndarray, origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(arr, (1.0, 1.0, 2.0), origin, np.eye(arr.ndim))


def test_finds_the_single_labeled_slice() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 4), np.uint8)
    ann[1:3, 1:3, 2] = 3
    index, labels = annotated_slice(_vol(ann), image)
    assert index == 2 and labels.shape == (6, 5) and labels.max() == 3


@pytest.mark.parametrize(
    ("fill", "message"),
    [(None, "no labeled slice"), ((0, 3), "labels on 2 slices")],
)
def test_refuses_zero_or_several_slices(fill, message) -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 4), np.uint8)
    for k in fill or ():
        ann[2, 2, k] = 1
    with pytest.raises(InputError, match=message):
        annotated_slice(_vol(ann), image)


def test_refuses_other_shape_or_geometry() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 3), np.uint8)
    ann[1, 1, 1] = 1
    with pytest.raises(InputError, match="shape"):
        annotated_slice(_vol(ann), image)
    ann = np.zeros((6, 5, 4), np.uint8)
    ann[1, 1, 1] = 1
    with pytest.raises(InputError, match="geometry"):
        annotated_slice(_vol(ann, origin=(5.0, 0.0, 0.0)), image)


def test_2d_annotation_needs_a_valid_index() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann2d = Volume(np.ones((6, 5), np.uint8), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    with pytest.raises(InputError, match="--slice"):
        annotated_slice(ann2d, image)
    with pytest.raises(InputError, match="outside the volume"):
        annotated_slice(ann2d, image, index=4)
    index, labels = annotated_slice(ann2d, image, index=3)
    assert index == 3 and labels.shape == (6, 5)
    wrong = Volume(np.ones((5, 6), np.uint8), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    with pytest.raises(InputError, match="differs from slice shape"):
        annotated_slice(wrong, image, index=1)


def test_index_must_agree_with_a_3d_annotation() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 4), np.uint8)
    ann[1, 1, 1] = 1
    with pytest.raises(InputError, match="labeled slice is 1"):
        annotated_slice(_vol(ann), image, index=2)
