"""Reading volumes: formats, geometry, DICOM series, and refusal of bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sparseseg.errors import InputError
from sparseseg.io.reader import read_image, read_label, read_volume
from sparseseg.io.writer import write_volume
from sparseseg_test_utils import real_case

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A proper rotation matrix from three angles (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def all_indices(shape: tuple[int, ...]) -> np.ndarray:
    return np.indices(shape).reshape(len(shape), -1).T


def ras_centres(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = all_indices(shape)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def sitk_image(array_ijk: np.ndarray, spacing, origin, direction: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk.T))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction.ravel()])
    return image


# --- NIfTI geometry ------------------------------------------------------------------------

AFFINES = {
    "ras_identity": np.diag([1.5, 2.0, 3.0]),
    "lps_flips": np.diag([-1.5, -2.0, 3.0]),
    "mixed_flip": np.diag([1.5, -2.0, -3.0]),
    "oblique": rotation(0.3, -0.2, 0.5) @ np.diag([1.5, 2.0, 3.0]),
    "oblique_flipped": rotation(-0.4, 0.1, 2.0) @ np.diag([-0.7, 1.1, 2.5]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nifti_geometry_matches_nibabel(tmp_path: Path, name: str) -> None:
    affine = np.eye(4)
    affine[:3, :3] = AFFINES[name]
    affine[:3, 3] = [12.5, -40.0, 7.25]
    data = np.random.default_rng(0).integers(0, 5, (7, 6, 5)).astype(np.int16)
    src = tmp_path / "src.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)

    vol = read_volume(src)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    # Every voxel centre: our LPS world coordinates, flipped to RAS, equal nibabel's.
    ours = vol.world_coordinates(all_indices(vol.shape)) @ LPS_TO_RAS.T
    np.testing.assert_allclose(ours, ras_centres(affine, data.shape), atol=1e-4)

    out = write_volume(tmp_path / "out.nii.gz", vol.array, vol)
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), data)
    np.testing.assert_allclose(
        ras_centres(written.affine, data.shape), ras_centres(affine, data.shape), atol=1e-4
    )


def test_4d_with_one_timepoint_is_squeezed(tmp_path: Path) -> None:
    file = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5, 1), np.eye(4)), file)
    vol = read_volume(file)
    assert vol.shape == (3, 4, 5)
    assert vol.array[1, 2, 3] == np.arange(60).reshape(3, 4, 5)[1, 2, 3]


# --- other formats -------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".mhd", ".nii"])
def test_other_formats_read(tmp_path: Path, ext: str) -> None:
    arr = np.random.default_rng(1).normal(size=(6, 5, 4)).astype(np.float32)
    direction = rotation(0.1, 0.2, -0.3)
    image = sitk_image(arr, (0.5, 0.75, 2.0), (1.0, 2.0, -3.0), direction)
    file = tmp_path / f"vol{ext}"
    sitk.WriteImage(image, str(file))
    vol = read_volume(file)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, (0.5, 0.75, 2.0))
    np.testing.assert_allclose(vol.origin, (1.0, 2.0, -3.0), atol=1e-6)
    np.testing.assert_allclose(vol.direction, direction, atol=1e-6)
    # Voxel centres agree with ITK's own index-to-world mapping.
    for idx in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        np.testing.assert_allclose(
            vol.world_coordinates(np.array([idx]))[0],
            image.TransformIndexToPhysicalPoint(idx),
            atol=1e-6,
        )


def test_png_is_2d(tmp_path: Path) -> None:
    arr = (np.arange(20).reshape(4, 5) * 10).astype(np.uint8)
    file = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(arr.T.copy()), str(file))
    assert read_image(file).shape == (4, 5)
    np.testing.assert_array_equal(read_label(file, ndim=2).array, arr)
    with pytest.raises(InputError, match="slice.png"):
        read_volume(file)


# --- DICOM ---------------------------------------------------------------------------------


def write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """Write a 3D int16 image as one DICOM file per slice (SimpleITK's series example)."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    uid = "1.2.826.0.1.3680043.2.1125.20261121.1"
    series_tags = [
        ("0008|0031", "120000"),
        ("0008|0021", "20261121"),
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000e", uid),
        ("0020|0037", "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0008|103e", "sparseseg test"),
        ("0008|0060", "CT"),
    ]
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in series_tags:
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0008|0012", "20261121")
        piece.SetMetaData("0008|0013", "120000")
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        piece.SetMetaData("0020|0032", "\\".join(str(v) for v in origin))
        piece.SetMetaData("0020|0013", str(k))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)


def test_dicom_series_to_nifti_keeps_world_coordinates(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).integers(-500, 500, (8, 7, 6)).astype(np.int16)
    direction = rotation(0.2, -0.1, 0.4)
    image = sitk_image(arr, (0.8, 0.9, 2.5), (-100.0, 50.0, 20.0), direction)
    folder = tmp_path / "series"
    write_dicom_series(image, folder)

    vol = read_volume(folder)
    np.testing.assert_array_equal(vol.array, arr)
    idx = all_indices(arr.shape)
    itk_world = np.array([image.TransformIndexToPhysicalPoint(tuple(map(int, i))) for i in idx])
    np.testing.assert_allclose(vol.world_coordinates(idx), itk_world, atol=1e-3)

    out = write_volume(tmp_path / "series.nii.gz", vol.array, vol)
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), arr)
    np.testing.assert_allclose(
        ras_centres(written.affine, arr.shape), itk_world @ LPS_TO_RAS.T, atol=1e-3
    )


def test_folder_without_dicom_series(tmp_path: Path) -> None:
    folder = tmp_path / "notdicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match="notdicom.*no DICOM series"):
        read_volume(folder)


# --- refusing bad input --------------------------------------------------------------------


def assert_names_file(exc: pytest.ExceptionInfo, path: Path) -> None:
    assert str(path) in str(exc.value)
    assert exc.value.path == path
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.nii.gz"
    with pytest.raises(InputError) as exc:
        read_volume(path)
    assert_names_file(exc, path)


def _nifti_bytes(tmp_path: Path) -> bytes:
    file = tmp_path / "whole.nii.gz"
    data = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), file)
    return file.read_bytes()


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.95])
def test_truncated_nii_gz(tmp_path: Path, keep: float) -> None:
    data = _nifti_bytes(tmp_path)
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="truncated") as exc:
        read_volume(path)
    assert_names_file(exc, path)


def test_gzip_of_truncated_nifti(tmp_path: Path) -> None:
    raw = gzip.decompress(_nifti_bytes(tmp_path))
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[:-1000]))
    with pytest.raises(InputError, match="truncated") as exc:
        read_volume(path)
    assert_names_file(exc, path)


def test_truncated_uncompressed_nii(tmp_path: Path) -> None:
    raw = gzip.decompress(_nifti_bytes(tmp_path))
    path = tmp_path / "short.nii"
    path.write_bytes(raw[:-4])
    with pytest.raises(InputError, match="truncated") as exc:
        read_volume(path)
    assert_names_file(exc, path)


@pytest.mark.parametrize("name", ["garbage.nii.gz", "garbage.nii", "garbage.nrrd", "garbage.mha"])
def test_garbage_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    assert_names_file(exc, path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "volume.txt"
    path.write_text("1 2 3")
    with pytest.raises(InputError, match="unknown file type") as exc:
        read_volume(path)
    assert_names_file(exc, path)


def test_4d_with_several_timepoints(tmp_path: Path) -> None:
    path = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), path)
    with pytest.raises(InputError, match="3 time points") as exc:
        read_volume(path)
    assert_names_file(exc, path)


def test_non_integer_label(tmp_path: Path) -> None:
    path = tmp_path / "soft.nii.gz"
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1] = 0.5
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match="non-integer") as exc:
        read_label(path)
    assert_names_file(exc, path)


def test_negative_label(tmp_path: Path) -> None:
    path = tmp_path / "neg.nii.gz"
    data = np.zeros((4, 4, 4), np.int16)
    data[0, 0, 0] = -1
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match="negative") as exc:
        read_label(path)
    assert_names_file(exc, path)


def test_integer_valued_float_label_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "float.nii.gz"
    data = np.zeros((4, 4, 4), np.float32)
    data[1:3, 1:3, 1:3] = 2.0
    data[0, 0, 0] = 300.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    vol = read_label(path)
    assert np.issubdtype(vol.array.dtype, np.integer)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, data.astype(int))


# --- real volumes --------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["AbdomenTS", "LeftAtrium"])
def test_real_volume_matches_nibabel(real_data: Path, folder: str) -> None:
    image_file, label_file = real_case(folder)
    image, label = read_volume(image_file), read_label(label_file)
    assert image.same_geometry(label)
    ref = nib.load(image_file)
    np.testing.assert_allclose(image.affine, ref.affine, atol=1e-3)
    np.testing.assert_array_equal(image.array, np.asarray(ref.dataobj))
