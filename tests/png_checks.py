"""Checks that a PNG written by sparseseg is a real picture, not an empty or blank file.

Importable from every test (``tests/`` is on pytest's pythonpath).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: str | Path, *, min_size: tuple[int, int] = (100, 100),
              max_size: tuple[int, int] = (4000, 4000),
              colours: Iterable[Sequence[int]] = (), min_colour_pixels: int = 100) -> np.ndarray:
    """Assert ``path`` is a decodable PNG of plausible size that is not one flat colour.

    Args:
        path: The picture.
        min_size: Smallest plausible ``(width, height)``.
        max_size: Largest plausible ``(width, height)``.
        colours: RGB colours that must each cover at least ``min_colour_pixels`` pixels (a
            chart's series colours: its legend swatches and lines or bars).
        min_colour_pixels: See ``colours``.

    Returns:
        The picture as an ``(H, W, 3)`` uint8 array.
    """
    from PIL import Image

    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as im:
        im.load()  # decodes every pixel: a truncated file fails here
        assert im.format == "PNG", path
        width, height = im.size
        rgb = np.asarray(im.convert("RGB"))
    assert min_size[0] <= width <= max_size[0], f"{path}: width {width}"
    assert min_size[1] <= height <= max_size[1], f"{path}: height {height}"
    pixels = rgb.reshape(-1, 3)
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    # A blank canvas (or a canvas with a title only) is one colour to within 0.5 %.
    assert len(counts) >= 10, f"{path}: only {len(counts)} colours"
    assert counts.max() / len(pixels) < 0.995, f"{path}: almost a single flat colour"
    for colour in colours:
        n = int(np.all(rgb == np.asarray(colour, np.uint8), axis=-1).sum())
        assert n >= min_colour_pixels, f"{path}: colour {tuple(colour)} on {n} pixels only"
    return rgb
