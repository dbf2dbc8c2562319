"""Propagate one annotated slice through the volume with the learned correspondence.

From the annotated slice, labels are copied slice by slice in both directions; each step copies
from the last propagated slice (not from the annotation), all label values at once. A label that
vanishes stays gone, and a direction stops once every label has vanished or the volume ends.
Copies run at the feature resolution (1/4 of the network's input): the previous slice's hard
label is area-averaged to that grid as a soft one-hot, copied by local attention, up-sampled
bilinearly to the native grid and turned back into labels by argmax.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.io.axes import SLICE_AXIS, from_slices, to_slices
from sparseseg.oneseg.cleanup import largest_component, verify_slice
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.preprocess import normalise_intensity


def _one_hot(label: np.ndarray, classes: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(1, D, h, w)`` soft one-hot of ``label`` over ``classes``, area-averaged to ``size``."""
    lab = torch.from_numpy(np.ascontiguousarray(label)).long()
    lut = torch.zeros(int(max(classes.max(), lab.max())) + 1, dtype=torch.long)
    lut[torch.from_numpy(classes).long()] = torch.arange(len(classes))
    onehot = F.one_hot(lut[lab], len(classes)).permute(2, 0, 1)[None].float()
    return F.interpolate(onehot, size=size, mode="area")


def propagate_labels(
    model: OneSegModel,
    image: np.ndarray,
    annotation: np.ndarray,
    index: int,
    *,
    verify: bool = False,
    keep_largest: bool = True,
    axis: int = SLICE_AXIS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Propagate a labeled slice through a volume.

    Args:
        model: A trained OneSeg model.
        image: The volume, indexed ``[i, j, k]``.
        annotation: The labeled slice (2D, the volume's in-plane shape) with integer labels.
        index: Position of the labeled slice along ``axis``.
        verify: Apply Sli2Vol's per-step verification.
        keep_largest: Keep only the largest 3D component of each label afterwards.
        axis: Slice axis.
        progress: Called with the number of slices done after each step.

    Returns:
        Label volume with ``image``'s shape and the annotation's dtype and label values.
    """
    slices_img = to_slices(image, axis)
    n, h, w = slices_img.shape
    if annotation.shape != (h, w):
        raise ValueError(f"annotation shape {annotation.shape} differs from slice shape {(h, w)}")
    if not 0 <= index < n:
        raise ValueError(f"slice index {index} outside 0..{n - 1}")
    classes = np.unique(np.concatenate([[0], np.unique(annotation)])).astype(np.int64)
    feats = model.features(model.slice_tensors(image))  # (n, E, fh, fw)
    fh, fw = feats.shape[-2:]
    norm = to_slices(normalise_intensity(image), axis) if verify else None

    out = np.zeros((n, h, w), dtype=annotation.dtype)
    out[index] = annotation
    done = 1
    if progress:
        progress(done)
    for step in (-1, 1):
        current = annotation
        k = index
        while 0 <= k + step < n:
            present = np.unique(current)
            if present.max(initial=0) == 0:
                break
            nxt = k + step
            soft = _one_hot(current, classes, (fh, fw)).to(model.device)
            with torch.no_grad():
                copied = model.net.copy(feats[nxt : nxt + 1], feats[k : k + 1], soft)
                full = F.interpolate(copied, size=(h, w), mode="bilinear", align_corners=False)
            new = classes[full[0].argmax(0).cpu().numpy()].astype(annotation.dtype)
            new[~np.isin(new, present)] = 0  # a vanished label never comes back
            if verify:
                for v in present[present != 0]:
                    mask = new == v
                    kept = verify_slice(mask, norm[nxt], current == v, norm[k])
                    new[mask & ~kept] = 0
                    new[kept & (new == 0)] = v
            out[nxt] = new
            current, k = new, nxt
            done += 1
            if progress:
                progress(done)
    if keep_largest:
        out = largest_component(out)
    return from_slices(out, axis)
