"""Layer order, geometry, painted slices and autosave paths: the parts without Qt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparseseg.io.reader import read_label
from sparseseg.io.volume import Volume
from sparseseg.napari.autosave import autosave_path, find_autosave, write_autosave
from sparseseg.napari.layers import (
    DISPLAY_AXES,
    display_scale,
    from_display,
    image_layer_data,
    label_dtype,
    layer_volume,
    to_display,
)
from sparseseg.napari.painting import PaintedSlices, keep_painted, labeled_slices, painted_only
from sparseseg.napari.reader import get_reader, looks_like_labels


def test_layer_order_puts_the_slices_on_the_slider() -> None:
    array = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    data = to_display(array)
    assert DISPLAY_AXES == (2, 1, 0)
    assert data.shape == (6, 5, 4)
    assert np.array_equal(data[3], array[:, :, 3].T)  # slider position k shows slice k
    assert np.array_equal(from_display(data), array)
    assert display_scale((1.5, 1.25, 3.0)) == (3.0, 1.25, 1.5)


def test_layer_volume_gives_back_the_geometry(phantom: tuple[Volume, Volume]) -> None:
    image, _ = phantom
    data, kwargs, kind = image_layer_data(image)
    back = layer_volume(data, kwargs["scale"], kwargs["metadata"])
    assert kind == "image"
    assert np.array_equal(back.array, image.array)
    assert back.same_geometry(image, tolerance=1e-9)
    plain = layer_volume(data, kwargs["scale"], {})
    assert plain.spacing == image.spacing and plain.origin == (0.0, 0.0, 0.0)


def test_reader_keeps_spacing_as_scale(phantom_files: tuple[Path, Path]) -> None:
    image_file, label_file = phantom_files
    reader = get_reader(str(image_file))
    assert reader is not None
    (data, kwargs, kind), (ldata, lkwargs, lkind) = reader([str(image_file), str(label_file)])
    assert (kind, lkind) == ("image", "labels")
    assert kwargs["scale"] == lkwargs["scale"] == (3.0, 1.25, 1.5)
    assert data.shape == ldata.shape == (16, 36, 40)
    assert kwargs["name"] == "case_0000"
    assert get_reader(str(image_file.with_suffix(".txt"))) is None
    assert get_reader(str(image_file.parent / "missing.nii.gz")) is None
    assert get_reader(str(image_file.parent)) is None  # a folder without DICOM series


def test_reader_opens_a_dicom_folder(tmp_path: Path, phantom: tuple[Volume, Volume]) -> None:
    sitk = pytest.importorskip("SimpleITK")
    image, _ = phantom
    volume = sitk.GetImageFromArray(np.transpose(image.array).astype(np.int16))
    volume.SetSpacing(image.spacing)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        z = k * image.spacing[2]
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|0032", f"0\\0\\{z}"), ("0020|0013", str(k)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0060", "CT"),
                           ("0018|0050", str(image.spacing[2]))):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(plane)
    reader = get_reader(str(folder))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(folder))
    assert kind == "image" and data.shape == (16, 36, 40)
    assert kwargs["scale"] == pytest.approx((3.0, 1.25, 1.5))


def test_looks_like_labels() -> None:
    assert looks_like_labels(np.array([[0, 1], [2, 4]], np.uint8))
    assert not looks_like_labels(np.array([[0.0, 1.0]]))
    assert not looks_like_labels(np.arange(300, dtype=np.int16))
    assert not looks_like_labels(np.arange(200, dtype=np.uint8))


def test_painted_slices_follow_the_edits() -> None:
    data = np.zeros((5, 4, 4), np.uint8)
    data[1, 0, 0] = 2  # a loaded annotation
    tracker = PaintedSlices(data, labeled_slices(data))
    assert tracker.slices == {1}
    data[3, 1:3, 1:3] = 1
    assert tracker.update(data) == {3}
    data[3] = 0  # erased: still a painted (empty) slice
    tracker.update(data)
    assert tracker.slices == {1, 3}
    assert labeled_slices(tracker.annotation(data)) == [1]
    data[:] = 7
    tracker.accept(data)  # a programmatic change is not painting
    assert tracker.update(data) == set() and tracker.slices == {1, 3}


def test_keep_painted_never_replaces_a_painted_slice() -> None:
    current = np.zeros((4, 3, 3), np.uint8)
    current[0] = 1
    current[2, 0, 0] = 3
    result = np.full((4, 3, 3), 5, np.int64)
    out = keep_painted(result, current, [0, 2])
    assert out.dtype == np.uint8
    assert np.array_equal(out[[0, 2]], current[[0, 2]])
    assert (out[[1, 3]] == 5).all()
    assert np.array_equal(painted_only(out, [2]), np.where(np.arange(4)[:, None, None] == 2,
                                                           out, 0))


def test_autosave_is_written_atomically_per_image(
    tmp_path: Path, autosave_dir: Path, phantom: tuple[Volume, Volume]
) -> None:
    image, label = phantom
    source = tmp_path / "a" / "case_0000.nii.gz"
    other = tmp_path / "b" / "case_0000.nii.gz"
    assert autosave_path(source) != autosave_path(other)
    assert autosave_path(source).parent == autosave_dir
    assert autosave_path(source).name.startswith("case-")
    assert find_autosave(source) is None
    written = write_autosave(source, label.array, image)
    assert find_autosave(source) == written
    back = read_label(written)
    assert np.array_equal(back.array, label.array) and back.same_geometry(image)
    assert [p.name for p in autosave_dir.iterdir()] == [written.name]  # no temporary left
    assert label_dtype(np.array([300])) == np.int16
    # Slices painted empty go beside it (a label file cannot hold them), and go with them.
    from sparseseg.napari.autosave import autosaved_empty_slices

    assert autosaved_empty_slices(source) == []
    write_autosave(source, label.array, image, empty_slices=[7, 2, 7])
    assert autosaved_empty_slices(source) == [2, 7]
    side = written.with_name(written.name.replace(".nii.gz", ".empty.json"))
    assert sorted(p.name for p in autosave_dir.iterdir()) == sorted([written.name, side.name])
    side.write_text("{not json")
    assert autosaved_empty_slices(source) == []  # unreadable: the labels still restore
    write_autosave(source, label.array, image)
    assert not side.exists()


def test_a_painted_empty_slice_tells_the_propagation_nothing_is_there() -> None:
    """An erased (painted, now empty) slice is an annotation: copy stops there."""
    from sparseseg.napari.tasks import propagate_labels

    image = Volume(np.random.default_rng(0).random((12, 10, 9)).astype(np.float32),
                   (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    labels = np.zeros(image.shape, np.uint8)
    labels[3:7, 3:7, 2] = 1
    painted = to_display(labels)  # slice 6 painted too, but erased: empty
    # The chain alone (the intensity decision would smooth the fade by a slice).
    only_labeled = propagate_labels(image=image, annotation=painted, model=None, method="copy",
                                    intensity_weight=0)
    with_erased = propagate_labels(image=image, annotation=painted, model=None, method="copy",
                                   painted=[2, 6], intensity_weight=0)
    assert from_display(only_labeled)[:, :, 6:].any()  # copy runs to the end
    # ... unless told the label is gone at 6: it stops there.
    assert not from_display(with_erased)[:, :, 6:].any()
    assert (from_display(with_erased)[:, :, :6] == labels[:, :, 2:3]).all()
