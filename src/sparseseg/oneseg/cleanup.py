"""Optional clean-up of propagated labels.

* :func:`verify_slice`: Sli2Vol's per-step verification. A newly propagated pixel is kept only
  if its intensity is closer to the previous mask's mean than to the mean of a ring around the
  previous mask; holes are then filled and specks removed by a binary opening.
* :func:`largest_component`: keep, per label, the largest 3D connected component (or those
  touching the annotation).

SimpleITK labels the components (it is loaded anyway to read the volume; scipy.ndimage would
add 0.2 s to every command's start); scipy is imported only by the optional verification.
"""

from __future__ import annotations

import numpy as np


def verify_slice(
    new_mask: np.ndarray,
    new_image: np.ndarray,
    prev_mask: np.ndarray,
    prev_image: np.ndarray,
    *,
    ring: int = 3,
) -> np.ndarray:
    """Sli2Vol verification of one propagated binary mask.

    Args:
        new_mask: Propagated mask on the new slice.
        new_image: Intensities of the new slice.
        prev_mask: Mask on the previous slice.
        prev_image: Intensities of the previous slice.
        ring: Width in pixels of the ring around the previous mask.

    Returns:
        The verified mask.
    """
    if not new_mask.any() or not prev_mask.any():
        return new_mask
    from scipy import ndimage

    dilated = ndimage.binary_dilation(prev_mask, iterations=ring)
    ring_mask = dilated & ~prev_mask
    if not ring_mask.any():
        return new_mask
    inside = float(prev_image[prev_mask].mean())
    outside = float(prev_image[ring_mask].mean())
    keep = np.abs(new_image - inside) <= np.abs(new_image - outside)
    out = new_mask & keep
    out = ndimage.binary_fill_holes(out)
    opened = ndimage.binary_opening(out)
    return opened if opened.any() else out


def largest_component(
    label: np.ndarray, values: list[int] | None = None, *, anchor: np.ndarray | None = None
) -> np.ndarray:
    """Keep, for each label value, only its largest 3D (26-connected) component.

    Args:
        label: Label volume.
        values: Label values to clean (default: all non-zero values present).
        anchor: Optional label volume of pixels known to be right (the annotated slice). For
            each value, every component touching its anchor pixels is kept instead of only the
            largest one, so annotated structures (two kidneys under one label) survive.

    Returns:
        A cleaned copy.
    """
    out = label.copy()
    if values is None:
        values = [int(v) for v in np.unique(label) if v != 0]
    for v in values:
        mask = label == v
        comps, n = _components(mask)
        if n <= 1:
            continue
        keep = np.zeros(n + 1, bool)
        if anchor is not None:
            keep[np.unique(comps[(anchor == v) & mask])] = True
            keep[0] = False
        if not keep.any():
            sizes = np.bincount(comps.ravel())
            sizes[0] = 0
            keep[int(np.argmax(sizes))] = True
        out[mask & ~keep[comps]] = 0
    return out


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Fully connected (8 in 2D, 26 in 3D) components of a boolean mask, numbered from 1 in
    raster order like ``scipy.ndimage.label``, and their count."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask).view(np.uint8))
    comps = sitk.ConnectedComponent(image, True)
    return sitk.GetArrayFromImage(comps), int(sitk.GetArrayViewFromImage(comps).max(initial=0))
