"""Painting 2D planes: grey images, label fills and outlines, error maps, label colours.

Each label value has a fixed colour (:func:`label_colour`), drawn as a translucent fill with an
opaque outline of the same colour. Error maps colour agreeing voxels green, extra ones (false
positives) red, missed ones (false negatives) blue and voxels given the wrong label yellow.
Every function is pure: arrays in, a new array out.

Example:
    >>> import numpy as np
    >>> label = np.zeros((4, 4), np.uint8); label[1:3, 1:3] = 1
    >>> fill(grey(None, label.shape), label)[1, 1].tolist()
    [230, 80, 60]
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Colour = tuple[int, int, int]

PALETTE = np.array(
    [
        [230, 80, 60],
        [60, 160, 230],
        [250, 200, 40],
        [120, 220, 90],
        [200, 90, 220],
        [240, 140, 40],
        [90, 220, 220],
        [240, 110, 170],
        [160, 120, 70],
        [150, 150, 255],
        [190, 230, 60],
        [255, 170, 130],
    ],
    np.uint8,
)
"""Colours of label values 1, 2, ...; larger values cycle through the list."""

AGREE_COLOUR: Colour = (40, 200, 80)
EXTRA_COLOUR: Colour = (255, 50, 50)
MISSED_COLOUR: Colour = (50, 120, 255)
WRONG_COLOUR: Colour = (255, 220, 0)
MARK_COLOUR: Colour = (255, 255, 255)


def label_colour(value: int) -> Colour:
    """Colour of a label value (``value >= 1``).

    Example:
        >>> label_colour(1)
        (230, 80, 60)
    """
    if value < 1:
        raise ValueError(f"label values start at 1, got {value}")
    r, g, b = PALETTE[(int(value) - 1) % len(PALETTE)]
    return int(r), int(g), int(b)


def intensity_limits(
    image: np.ndarray, low: float = 1.0, high: float = 99.0
) -> tuple[float, float]:
    """Grey-level window of a volume: its ``low`` and ``high`` percentiles (finite voxels).

    Large volumes are subsampled, so this stays fast on a 512 x 512 x 300 CT.
    """
    flat = np.asarray(image).ravel()
    if flat.size > 2_000_000:
        flat = flat[:: flat.size // 1_000_000]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(flat, [low, high])
    return float(lo), float(hi)


def contour(mask: np.ndarray) -> np.ndarray:
    """Outline of a 2D mask: its pixels with a 4-neighbour outside it (or on the border)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    structure = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def grey(image2d: np.ndarray | None, shape: tuple[int, int],
         limits: tuple[float, float] | None = None) -> np.ndarray:
    """An image plane as float RGB in ``[0, 255]`` (black when ``image2d`` is ``None``)."""
    if image2d is None:
        return np.zeros((*shape, 3), np.float32)
    if image2d.shape != tuple(shape):
        raise ValueError(f"image plane {image2d.shape} differs from label plane {shape}")
    lo, hi = limits if limits is not None else intensity_limits(image2d)
    scaled = np.clip((np.asarray(image2d, np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(scaled[..., None] * 255.0, 3, axis=2)


def fill(rgb: np.ndarray, label2d: np.ndarray, *, alpha: float = 0.45,
         outline: bool = True) -> np.ndarray:
    """Draw every label of a plane over ``rgb``: translucent fill, opaque outline.

    Args:
        rgb: ``(H, W, 3)`` background, values in ``[0, 255]``.
        label2d: ``(H, W)`` integer labels (0 = background).
        alpha: Opacity of the fill.
        outline: Draw each label's outline in its opaque colour.

    Returns:
        ``(H, W, 3)`` uint8 picture.
    """
    out = np.asarray(rgb, np.float32).copy()
    for value in np.unique(label2d):
        if value <= 0:
            continue
        mask = label2d == value
        colour = np.array(label_colour(int(value)), np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        if outline:
            out[contour(mask)] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def outline(rgb: np.ndarray, mask: np.ndarray, colour: Colour = MARK_COLOUR) -> np.ndarray:
    """Draw the outline of ``mask`` over ``rgb`` in one opaque colour; uint8 result."""
    out = np.asarray(rgb).copy()
    out[contour(mask)] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def error_categories(pred2d: np.ndarray, truth2d: np.ndarray) -> dict[str, np.ndarray]:
    """Masks ``agree``, ``extra``, ``missed`` and ``wrong`` of a prediction against a reference."""
    p, t = np.asarray(pred2d) > 0, np.asarray(truth2d) > 0
    same = np.asarray(pred2d) == np.asarray(truth2d)
    return {
        "agree": p & t & same,
        "extra": p & ~t,
        "missed": t & ~p,
        "wrong": p & t & ~same,
    }


def errors(rgb: np.ndarray, pred2d: np.ndarray, truth2d: np.ndarray, *,
           alpha: float = 0.6) -> np.ndarray:
    """Colour each voxel of a plane by agreement of prediction and reference (see module doc)."""
    out = np.asarray(rgb, np.float32).copy()
    colours = (AGREE_COLOUR, EXTRA_COLOUR, MISSED_COLOUR, WRONG_COLOUR)
    for mask, colour in zip(error_categories(pred2d, truth2d).values(), colours, strict=True):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
