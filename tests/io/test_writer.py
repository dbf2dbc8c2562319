"""Writing volumes in a reference geometry, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sparseseg.errors import InputError
from sparseseg.io.reader import read_label, read_volume
from sparseseg.io.volume import Volume
from sparseseg.io.writer import atomic_path, write_volume


def oblique_reference(shape=(9, 8, 7)) -> Volume:
    angle = 0.35
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])
    return Volume(np.zeros(shape, np.float32), (0.7, 1.3, 3.5), (10.0, -20.0, 30.5), direction)


def test_round_trip_preserves_array_and_geometry(tmp_path: Path) -> None:
    ref = oblique_reference()
    arr = np.random.default_rng(0).normal(size=ref.shape).astype(np.float32)
    out = write_volume(tmp_path / "out.nii.gz", arr, ref)
    vol = read_volume(out)
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.same_geometry(ref, tolerance=1e-5)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-5)
    assert vol.path == out


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_label_round_trip_in_each_format(tmp_path: Path, ext: str) -> None:
    ref = oblique_reference()
    arr = np.random.default_rng(1).integers(0, 4, ref.shape).astype(np.uint8)
    vol = read_label(write_volume(tmp_path / f"lab{ext}", arr, ref))
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.same_geometry(ref, tolerance=1e-5)


def test_dtypes_are_converted(tmp_path: Path) -> None:
    ref = oblique_reference((4, 4, 4))
    mask = np.zeros(ref.shape, bool)
    mask[1, 2, 3] = True
    vol = read_volume(write_volume(tmp_path / "mask.nii.gz", mask, ref))
    assert vol.array.dtype == np.uint8 and vol.array[1, 2, 3] == 1 and vol.array.sum() == 1
    big = np.full(ref.shape, 70000, np.int64)
    assert read_volume(write_volume(tmp_path / "big.nii.gz", big, ref)).array.max() == 70000
    half = write_volume(tmp_path / "cast.nii.gz", np.full(ref.shape, 2.7), ref, dtype=np.int16)
    assert read_volume(half).array.dtype == np.int16


def test_shape_mismatch_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differs"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((2, 2, 2)), oblique_reference())


def test_missing_output_folder(tmp_path: Path) -> None:
    ref = oblique_reference((3, 3, 3))
    with pytest.raises(InputError, match="output folder does not exist") as exc:
        write_volume(tmp_path / "nowhere" / "x.nii.gz", ref.array, ref)
    assert str(tmp_path / "nowhere") in str(exc.value)


def test_no_temporary_files_left(tmp_path: Path) -> None:
    ref = oblique_reference((3, 3, 3))
    write_volume(tmp_path / "a.nii.gz", ref.array, ref)
    write_volume(tmp_path / "a.nii.gz", ref.array + 1, ref)  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]
    assert read_volume(tmp_path / "a.nii.gz").array.min() == 1


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = oblique_reference((3, 3, 3))
    out = write_volume(tmp_path / "keep.nii.gz", ref.array + 5, ref)
    before = out.read_bytes()

    def failing_write(image: sitk.Image, path: str, *args: object) -> None:
        Path(path).write_bytes(b"half a file")  # a partial write, then the failure
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(InputError, match="disk full") as exc:
        write_volume(out, ref.array, ref)
    assert str(out) in str(exc.value)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def test_atomic_path_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".json") and tmp != target
        tmp.write_text("new")
        raise KeyError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
