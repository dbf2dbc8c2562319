"""Reading annotated slices: one or several, volumes or 2D files, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparseseg.errors import InputError
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.oneseg.annotation import (
    SliceAnnotation,
    annotated_slices,
    merge_annotations,
    read_annotation,
)


def _vol(arr: np.ndarray, origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(arr, (1.0, 1.0, 2.0), origin, np.eye(arr.ndim))


def test_finds_the_single_labeled_slice() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 4), np.uint8)
    ann[1:3, 1:3, 2] = 3
    found = annotated_slices(_vol(ann), image)
    assert found.indices == [2] and found.plane == (6, 5)
    assert (found.slices[2] == ann[:, :, 2]).all()


def test_finds_every_labeled_slice_and_the_labels_on_each() -> None:
    image = _vol(np.zeros((6, 5, 8), np.float32))
    ann = np.zeros((6, 5, 8), np.uint8)
    ann[1:3, 1:3, 1] = 1
    ann[3:5, 3:5, 1] = 2
    ann[1:3, 1:3, 5] = 1
    ann[3:5, 3:5, 6] = 2
    found = annotated_slices(_vol(ann), image)
    assert found.indices == [1, 5, 6]
    assert found.labels() == [1, 2]
    assert found.key_slices(1) == [1, 5] and found.key_slices(2) == [1, 6]
    assert sorted(found.groups()) == [([1], [1, 5]), ([2], [1, 6])]
    assert (found.volume() == ann).all()


def test_labels_drawn_on_the_same_slices_form_one_group() -> None:
    s = np.zeros((4, 4), np.uint8)
    s[0, 0], s[3, 3] = 1, 2
    ann = SliceAnnotation({2: s, 6: s.copy()}, n_slices=9)
    assert ann.groups() == [([1, 2], [2, 6])]


def test_refuses_an_empty_annotation() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    with pytest.raises(InputError, match="no labeled slice"):
        annotated_slices(_vol(np.zeros((6, 5, 4), np.uint8)), image)


def test_refuses_other_shape_or_geometry() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 3), np.uint8)
    ann[1, 1, 1] = 1
    with pytest.raises(InputError, match="shape"):
        annotated_slices(_vol(ann), image)
    ann = np.zeros((6, 5, 4), np.uint8)
    ann[1, 1, 1] = 1
    with pytest.raises(InputError, match="geometry"):
        annotated_slices(_vol(ann, origin=(5.0, 0.0, 0.0)), image)


def test_2d_annotation_needs_a_valid_index() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann2d = Volume(np.ones((6, 5), np.uint8), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    with pytest.raises(InputError, match="--slice"):
        annotated_slices(ann2d, image)
    with pytest.raises(InputError, match="outside the volume"):
        annotated_slices(ann2d, image, index=4)
    found = annotated_slices(ann2d, image, index=3)
    assert found.indices == [3] and found.plane == (6, 5)
    wrong = Volume(np.ones((5, 6), np.uint8), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    with pytest.raises(InputError, match="differs from slice shape"):
        annotated_slices(wrong, image, index=1)
    empty = Volume(np.zeros((6, 5), np.uint8), (1.0, 1.0), (0.0, 0.0), np.eye(2))
    with pytest.raises(InputError, match="holds no label"):
        annotated_slices(empty, image, index=1)


def test_index_must_agree_with_a_3d_annotation() -> None:
    image = _vol(np.zeros((6, 5, 4), np.float32))
    ann = np.zeros((6, 5, 4), np.uint8)
    ann[1, 1, 1] = 1
    with pytest.raises(InputError, match="labeled slices are 1"):
        annotated_slices(_vol(ann), image, index=2)
    assert annotated_slices(_vol(ann), image, index=1).indices == [1]


def test_several_2d_files_each_with_its_slice(tmp_path: Path) -> None:
    image = _vol(np.zeros((6, 5, 8), np.float32))
    a = np.zeros((6, 5), np.uint8)
    a[1:3, 1:3] = 1
    b = np.zeros((6, 5), np.uint8)
    b[2:4, 2:4] = 2
    for name, arr in (("a.nii.gz", a), ("b.nii.gz", b)):
        write_volume(tmp_path / name, arr, Volume(arr, (1.0, 1.0), (0.0, 0.0), np.eye(2)))
    files = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    found = read_annotation(files, image, index=[2, 6])
    assert found.indices == [2, 6]
    assert (found.slices[2] == a).all() and (found.slices[6] == b).all()
    with pytest.raises(InputError, match="one --slice per file"):
        read_annotation(files, image, index=[2])
    with pytest.raises(InputError, match="give each one's slice"):
        read_annotation(files, image)
    # The same slice given twice with different labels: refused, naming the file.
    with pytest.raises(InputError, match="slice 2 is annotated twice with different labels"):
        read_annotation(files, image, index=[2, 2])
    # ... and twice with the same labels: fine.
    assert read_annotation([files[0], files[0]], image, index=[2, 2]).indices == [2]


def test_merge_keeps_every_slice() -> None:
    s = np.ones((3, 3), np.uint8)
    merged = merge_annotations([SliceAnnotation({1: s}, 5), SliceAnnotation({3: 2 * s}, 5)])
    assert merged.indices == [1, 3] and merged.labels() == [1, 2]


def test_restore_puts_the_drawn_labels_back_and_leaves_the_others() -> None:
    drawn = np.zeros((4, 4), np.uint8)
    drawn[0:2, 0:2] = 1
    ann = SliceAnnotation({1: drawn}, n_slices=3)
    stack = np.zeros((3, 4, 4), np.uint8)
    stack[1, 2:4, 2:4] = 1  # label 1 where it is not drawn: removed
    stack[1, 3, 0] = 2  # label 2 is not drawn on slice 1: kept
    ann.restore(stack)
    assert (stack[1] == 1).sum() == 4 and (stack[1][0:2, 0:2] == 1).all()
    assert stack[1, 3, 0] == 2
