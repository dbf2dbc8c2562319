"""Writing pictures as PNG files: path checks up front, atomic writes.

Example:
    >>> import numpy as np
    >>> write_png("out.png", np.zeros((4, 4, 3), np.uint8))  # doctest: +SKIP
    PosixPath('out.png')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.viz.layout import Figure


def check_png_path(path: str | Path) -> Path:
    """Check that a picture can be written at ``path`` (before any long computation).

    Raises:
        InputError: The name does not end in ``.png``, it is a folder, or its folder is missing.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError("a picture must be a .png file", path)
    if path.is_dir():
        raise InputError("is a folder, expected a .png file", path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("output folder does not exist", parent)
    return path


def write_png(path: str | Path, rgb: np.ndarray | Figure) -> Path:
    """Write an RGB picture (or a :class:`~sparseseg.viz.layout.Figure`) as a PNG, atomically.

    Args:
        path: Output ``.png`` file; its folder must exist.
        rgb: ``(H, W, 3)`` uint8 array or a figure.

    Returns:
        The written path.

    Raises:
        InputError: Bad path (see :func:`check_png_path`) or the file cannot be written.
    """
    from PIL import Image

    from sparseseg.io.writer import atomic_path

    path = check_png_path(path)
    pixels = rgb.rgb if isinstance(rgb, Figure) else np.asarray(rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) picture, got shape {pixels.shape}")
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(tmp, format="PNG")
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc})", path) from None
    return path
