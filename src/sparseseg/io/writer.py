"""Write volumes in a reference geometry, atomically."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.formats import split_extension
from sparseseg.io.volume import Volume


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or exception inside the block leaves ``path`` as it was (absent or old), never
    half-written. The temporary file keeps ``path``'s extension so writers pick the format.

    Example:
        >>> with atomic_path(out) as tmp:  # doctest: +SKIP
        ...     tmp.write_text("done")
    """
    path = Path(path)
    stem, ext = split_extension(path)
    tmp = path.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_volume(
    path: str | Path, array: np.ndarray, reference: Volume, *, dtype: np.dtype | None = None
) -> Path:
    """Write ``array`` with ``reference``'s geometry so it overlays it in any viewer.

    Args:
        path: Output file; its extension picks the format (``.nii.gz`` recommended).
        array: Voxel array indexed ``[i, j, k]`` with the reference's shape.
        reference: Volume whose spacing, origin and direction are copied.
        dtype: Cast to this dtype before writing (default: keep).

    Returns:
        The written path.

    Raises:
        InputError: The output folder is missing or not writable, or shapes differ.
    """
    import SimpleITK as sitk  # imported here: a faster start for commands that write nothing

    path = Path(path)
    if tuple(array.shape) != tuple(reference.shape):
        raise ValueError(f"array shape {array.shape} differs from reference {reference.shape}")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array)))
    image.SetSpacing([float(s) for s in reference.spacing])
    image.SetOrigin([float(o) for o in reference.origin])
    image.SetDirection([float(d) for d in np.asarray(reference.direction).ravel()])
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("output folder does not exist", parent)
    try:
        with atomic_path(path) as tmp:
            sitk.WriteImage(image, str(tmp), True)
    except RuntimeError as exc:
        raise InputError(f"cannot write ({str(exc).strip().splitlines()[-1]})", path) from None
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror})", path) from None
    return path
