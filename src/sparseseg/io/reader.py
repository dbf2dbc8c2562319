"""Read images and label maps (NIfTI, NRRD, MHA/MHD, DICOM series, PNG) with SimpleITK."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.formats import IMAGE_2D_EXTENSIONS, is_volume_file
from sparseseg.io.volume import Volume

if TYPE_CHECKING:  # SimpleITK is imported where it is used (a faster start)
    import SimpleITK as sitk


def _read_dicom_series(folder: Path) -> sitk.Image:
    import SimpleITK as sitk
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:  # pragma: no cover - GDCM failure on unreadable folder
        raise InputError(f"cannot scan for DICOM series ({_first_line(exc)})", folder) from None
    if not series:
        raise InputError("folder holds no DICOM series (nor any volume file)", folder)
    if len(series) > 1:
        raise InputError(
            f"folder holds {len(series)} DICOM series; give a folder with exactly one", folder
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series ({_first_line(exc)})", folder) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages carry file/line noise first; the last meaningful line names the cause.
    for line in reversed(lines):
        if "Description:" in line:
            return line.split("Description:", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def _nifti_data_end(header: bytes) -> int | None:
    """Byte offset where a NIfTI-1/-2 file's voxel data ends, or ``None`` if not NIfTI."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            offset = int(struct.unpack(f"{order}f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            bitpix = struct.unpack(f"{order}h", header[14:16])[0]
            dims = struct.unpack(f"{order}8q", header[16:80])
            offset = struct.unpack(f"{order}q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 0 < ndim <= 7 or bitpix <= 0:
        return None
    count = 1
    for n in dims[1 : ndim + 1]:
        count *= max(int(n), 1)
    return max(offset, 348) + count * bitpix // 8


def _check_complete(path: Path) -> None:
    """Refuse a truncated or corrupt gzip stream or NIfTI file.

    ITK's NIfTI reader silently fills the missing part of a truncated file with zeros, so the
    stream is checked here: gzip must decompress to its end-of-stream marker (CRC included)
    and a NIfTI file must be at least as long as its header says.
    """
    compressed = path.name.lower().endswith(".gz")
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                header = stream.read(540)
                size = len(header)
                while chunk := stream.read(1 << 22):
                    size += len(chunk)
        else:
            with open(path, "rb") as stream:
                header = stream.read(540)
            size = path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"is truncated or corrupt ({exc})", path) from None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        end = _nifti_data_end(header)
        if end is not None and size < end:
            raise InputError(
                f"is truncated: holds {size} bytes of data, the header needs {end}", path
            )


def _to_volume(image: sitk.Image, path: Path) -> Volume:
    import SimpleITK as sitk
    if image.GetNumberOfComponentsPerPixel() != 1:
        if path.suffix.lower() == ".png":
            image = sitk.VectorIndexSelectionCast(image, 0)
        else:
            raise InputError(
                f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                "expected a scalar image",
                path,
            )
    array = sitk.GetArrayFromImage(image)
    # SimpleITK returns [k, j, i]; sparseseg indexes like the file, [i, j, k].
    array = np.ascontiguousarray(np.transpose(array))
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(dim, dim)
    return Volume(array, tuple(image.GetSpacing()), tuple(image.GetOrigin()), direction, path)


def read_image(path: str | Path) -> Volume:
    """Read a 2D or 3D image of any supported format.

    Args:
        path: A volume file, a PNG, or a folder holding one DICOM series.

    Returns:
        The voxel array and its geometry. 4D files whose last axis has length 1 are squeezed.

    Raises:
        InputError: The path is missing, unreadable, corrupt, or not a scalar image.
    """
    import SimpleITK as sitk
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        lower = path.name.lower()
        known = is_volume_file(path) or lower.endswith((*IMAGE_2D_EXTENSIONS, ".dcm"))
        if not known:
            raise InputError(
                "unknown file type (expected .nii, .nii.gz, .nrrd, .mha, .mhd, .png, "
                "or a DICOM folder)",
                path,
            )
        _check_complete(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputError(f"cannot read ({_first_line(exc)})", path) from None
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(f"is 4D with {size[3]} time points; expected one 3D volume", path)
        image = image[:, :, :, 0]
    return _to_volume(image, path)


def read_volume(path: str | Path) -> Volume:
    """Read a 3D volume; refuse 2D images.

    Raises:
        InputError: See :func:`read_image`; also when the image is not 3D.
    """
    vol = read_image(path)
    if vol.ndim != 3:
        raise InputError(f"is a {vol.ndim}D image of shape {vol.shape}; expected a 3D volume", path)
    return vol


def read_label(path: str | Path, *, ndim: int | None = 3) -> Volume:
    """Read a label map and check that its values are non-negative integers.

    Args:
        path: Label file or DICOM folder.
        ndim: Required number of dimensions, or ``None`` to accept 2D and 3D.

    Returns:
        A volume whose array has an integer dtype (``uint8``/``int16``/``int32`` as fits).

    Raises:
        InputError: Unreadable, wrong dimension, or non-integer / negative values.
    """
    vol = read_image(path) if ndim is None else _read_ndim(path, ndim)
    arr = vol.array
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError("is not a label map: it holds non-integer values", path)
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InputError("is not a label map: it holds negative values", path)
    top = int(arr.max()) if arr.size else 0
    dtype = np.uint8 if top < 256 else (np.int16 if top < 32768 else np.int32)
    vol.array = arr.astype(dtype, copy=False)
    return vol


def _read_ndim(path: str | Path, ndim: int) -> Volume:
    if ndim == 3:
        return read_volume(path)
    vol = read_image(path)
    if vol.ndim != ndim:
        raise InputError(f"is {vol.ndim}D; expected {ndim}D", path)
    return vol
