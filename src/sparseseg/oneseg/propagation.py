"""Propagate one annotated slice through the volume, slice by slice, in both directions.

:func:`chain_propagate` is the driver every propagator shares: from the annotated slice it steps
outwards in both directions, each step from the last propagated slice (not from the
annotation), all label values at once. A label that vanishes stays gone, and a direction stops
once every label has vanished or the volume ends. Optional clean-up: Sli2Vol's per-step
verification and a final 3D largest-component pass.

:func:`oneseg_step` is OneSeg's step. Copies run at the feature resolution (1/4 of the
network's input): the previous slice's hard label is area-averaged to that grid as a soft
one-hot, copied by local attention, up-sampled bilinearly to the native grid and turned back
into labels by argmax. By default each step also copies from the annotated slice itself (one
softmax over both windows, :func:`~sparseseg.oneseg.attention.multi_reference_copy`): the
clinician's label never drifts, so target pixels that still match it take its value, which
holds the chain where it would wander. Measured (docs/benchmarks.md): on LeftAtrium it lifts
the mean Dice from the screened slice by about 0.03 and leaves the largest-slice start as it
was; on a whole-body CT started from an organ's largest slice it lets labels run further past
the organ's end (-0.03), since far slices that still resemble the annotated one take its
label.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.io.axes import SLICE_AXIS, from_slices, slice_shape, to_slices
from sparseseg.oneseg.attention import LocalAttentionCopy
from sparseseg.oneseg.cleanup import largest_component, verify_slice
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.preprocess import normalise_intensity

StepFunction = Callable[[int, int, np.ndarray], np.ndarray]
"""``step(current_index, next_index, current_label) -> next_label`` (2D label slices)."""


def chain_propagate(
    image: np.ndarray,
    annotation: np.ndarray,
    index: int,
    step: StepFunction,
    *,
    verify: bool = False,
    keep_largest: bool = True,
    axis: int = SLICE_AXIS,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Propagate a labeled slice through a volume with a slice-to-slice step function.

    Args:
        image: The volume, indexed ``[i, j, k]``.
        annotation: The labeled slice (2D, the volume's in-plane shape), integer labels.
        index: Position of the labeled slice along ``axis``.
        step: Maps the current slice's labels to the next slice's.
        verify: Apply Sli2Vol's per-step verification.
        keep_largest: Keep only the largest 3D component of each label afterwards (every
            component that touches the annotation is kept).
        axis: Slice axis.
        progress: Called with the number of slices done after each step.

    Returns:
        Label volume with ``image``'s shape and the annotation's dtype and label values.
    """
    n = image.shape[axis]
    plane = slice_shape(image.shape, axis)
    if annotation.shape != plane:
        raise ValueError(f"annotation shape {annotation.shape} differs from slice shape {plane}")
    if not 0 <= index < n:
        raise ValueError(f"slice index {index} outside 0..{n - 1}")
    norm = to_slices(normalise_intensity(image), axis) if verify else None
    out = np.zeros((n, *plane), dtype=annotation.dtype)
    out[index] = annotation
    done = 1
    if progress:
        progress(done)
    for direction in (-1, 1):
        current, k = annotation, index
        while 0 <= k + direction < n:
            present = np.unique(current)
            if present.max(initial=0) == 0:
                break
            nxt = k + direction
            new = step(k, nxt, current).astype(annotation.dtype, copy=False)
            new[~np.isin(new, present)] = 0  # a vanished label never comes back
            if norm is not None:
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
        anchor = np.zeros_like(out)
        anchor[index] = annotation
        out = largest_component(out, anchor=anchor)
    return from_slices(out, axis)


def _one_hot(label: np.ndarray, classes: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(1, D, h, w)`` soft one-hot of ``label`` over ``classes``, area-averaged to ``size``."""
    lab = torch.from_numpy(np.ascontiguousarray(label)).long()
    lut = torch.zeros(int(max(classes.max(), lab.max())) + 1, dtype=torch.long)
    lut[torch.from_numpy(classes).long()] = torch.arange(len(classes))
    onehot = F.one_hot(lut[lab], len(classes)).permute(2, 0, 1)[None].float()
    return F.interpolate(onehot, size=size, mode="area")


def oneseg_step(
    model: OneSegModel,
    image: np.ndarray,
    classes: np.ndarray,
    *,
    temperature: float | None = None,
    anchor: tuple[int, np.ndarray] | None = None,
    axis: int = SLICE_AXIS,
) -> StepFunction:
    """OneSeg's step: encode every slice once, then copy labels by local attention.

    Args:
        model: The trained model.
        image: The volume.
        classes: Label values (background first) of the one-hot channels.
        temperature: Softmax temperature of the label copy (default: the model's).
        anchor: ``(index, label)`` of the annotated slice: every step also copies from it
            (one softmax over both references). ``None``: from the last slice only, as in
            the paper.
        axis: Slice axis.
    """
    feats = model.features(model.slice_tensors(image))  # (n, E, fh, fw)
    fh, fw = feats.shape[-2:]
    plane = slice_shape(image.shape, axis)
    copy = LocalAttentionCopy(
        radius=model.net.copy.radius,
        temperature=temperature or model.propagation_temperature,
    )

    anchor_ref = None
    if anchor is not None:
        a, label = anchor
        anchor_ref = (a, feats[a : a + 1], _one_hot(label, classes, (fh, fw)).to(model.device))

    def step(k: int, nxt: int, current: np.ndarray) -> np.ndarray:
        keys = [feats[k : k + 1]]
        values = [_one_hot(current, classes, (fh, fw)).to(model.device)]
        if anchor_ref is not None and anchor_ref[0] != k:
            keys.append(anchor_ref[1])
            values.append(anchor_ref[2])
        with torch.no_grad():
            copied = copy.copy_from(feats[nxt : nxt + 1], keys, values)
            full = F.interpolate(copied, size=plane, mode="bilinear", align_corners=False)
        return classes[full[0].argmax(0).cpu().numpy()]

    return step

