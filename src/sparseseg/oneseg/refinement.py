"""Refinement by a network trained on a whole dataset's propagated labels.

Propagation copies a volume's annotated slices through that volume alone; its errors (a leak
where a drawn outline lies inside a uniform region, a chain that dies before the structure
ends) are that volume's own. When a few slices of *every* volume of a dataset are annotated
and propagated, all the propagated labels train one 2D network (MONAI's U-Net, three
neighbouring slices in), whose errors are not those of any one propagation. Each volume is
then refined:

1. a copy of the network is fine-tuned on that volume's annotated slices, the only labels
   known to be right (:func:`finetune_refiner`);
2. its class probabilities are fused with the propagated labels, smoothed in-plane first
   (Gaussian, ``sigma`` pixels) so that they carry a margin of doubt near their outlines, by
   summing log-probabilities, the propagation's weighted by ``propagation_weight``
   (:func:`fuse`). At the defaults (sigma 4, weight 0.25) the network decides wherever it is
   fairly sure (more than 91 % sure overrules even the unsmoothed labels); where it is
   undecided the propagation stands. At weight 1 the propagation stands except near its
   outlines or against a near-certain network; at 0 the network decides alone;
3. the annotated slices are put back exactly, and each label keeps its largest 3D component
   (and every component touching its annotated pixels).

Measured in ``docs/benchmarks.md`` (the population prior on LeftAtrium).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from sparseseg.checkpoint import load_model, save_model
from sparseseg.errors import ModelError, first_line
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.cleanup import largest_component
from sparseseg.oneseg.preprocess import normalise_intensity, resize_slices

#: Offsets of the slices the network sees around each slice.
NEIGHBOURS = (-1, 0, 1)

#: A probability floor in the fusion: neither side is ever infinitely sure.
FLOOR = 1e-4

#: The across-slice smoothing's kernel reaches this many sigmas.
Z_TRUNCATE = 2.0

#: The ``kind`` of a saved refinement network's folder (:func:`save_refiner`).
KIND = "oneseg-refiner"


@dataclass(frozen=True)
class RefineConfig:
    """Training and fusion settings of the refinement.

    Attributes:
        steps: Training steps on the whole dataset (batches of ``batch_size`` slices).
        max_time: Stop training after this many minutes even if ``steps`` are not done
            (``None``: no limit; with a limit the result depends on the machine's speed).
        batch_size: Slices per step.
        lr: AdamW learning rate at the start; it decays to 0 along a cosine over the run
            (over ``steps``, or ``max_time`` if that comes first).
        annotated_weight: How much more often an annotated slice is drawn than a propagated
            one.
        finetune_steps: Steps of fine-tuning on each volume's annotated slices (0: none).
        finetune_lr: Adam learning rate of the fine-tuning.
        rounds: Training rounds: after the first, every volume's refined labels replace its
            propagated ones as the targets and the network trains ``steps`` more
            (:func:`train_rounds`).
        sigma: In-plane smoothing (pixels) of the propagated labels before the fusion.
        z_sigma: Smoothing of the network's probabilities across slices (slices; 0: none),
            which makes its slice-by-slice decisions agree in 3D.
        propagation_weight: Weight of the propagated labels' log-probabilities beside the
            network's in the fusion (1: equal; 0: the network alone decides outside the
            annotated slices).
        size: Slices are resized to ``size x size`` for the network.
        seed: Seed of the network's initialisation and of the slices drawn.
    """

    steps: int = 4000
    max_time: float | None = None
    batch_size: int = 16
    lr: float = 2e-3
    annotated_weight: float = 3.0
    finetune_steps: int = 50
    finetune_lr: float = 3e-4
    rounds: int = 1
    sigma: float = 4.0
    z_sigma: float = 0.0
    propagation_weight: float = 0.25
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("size", 16), ("rounds", 1),
                          ("finetune_steps", 0), ("sigma", 0), ("z_sigma", 0),
                          ("propagation_weight", 0)):
            value = getattr(self, name)
            if not value >= low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be a positive number of minutes, got "
                             f"{self.max_time}")


class SliceStack:
    """One volume as the network sees it: slices first, intensities normalised
    (:func:`~sparseseg.oneseg.preprocess.normalise_intensity`), resized to ``size x size``.

    Args:
        slices: The volume's slices, ``(N, H, W)``.
        size: Side of the network's input.
    """

    def __init__(self, slices: np.ndarray, *, size: int) -> None:
        if slices.ndim != 3:
            raise ValueError(f"expected (N, H, W) slices, got shape {slices.shape}")
        self.plane = tuple(int(s) for s in slices.shape[1:])
        self.size = size
        norm = np.ascontiguousarray(normalise_intensity(slices))
        self.slices = resize_slices(torch.from_numpy(norm)[:, None], size)[:, 0].contiguous()

    def __len__(self) -> int:
        return len(self.slices)

    def inputs(self, index: np.ndarray | Sequence[int]) -> torch.Tensor:
        """Network input of the slices ``index``: ``(B, 3, size, size)``, each slice with its
        neighbours (the first and last slices repeat themselves)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        n = len(self.slices)
        return torch.stack([self.slices[(idx + o).clamp(0, n - 1)] for o in NEIGHBOURS], 1)

    def target(self, classes: np.ndarray) -> torch.Tensor:
        """A ``(N, H, W)`` stack of class indices resized (nearest) to the network's size."""
        t = torch.from_numpy(np.ascontiguousarray(classes, dtype=np.float32))[:, None]
        return F.interpolate(t, size=(self.size, self.size), mode="nearest-exact")[:, 0].long()

    def probabilities(self, net: torch.nn.Module, index: np.ndarray | Sequence[int],
                      device: torch.device) -> np.ndarray:
        """Class probabilities of the slices ``index`` at their own resolution,
        ``(B, C, H, W)``, averaged with those of the left-right mirrored slices."""
        x = self.inputs(index).to(device)
        with torch.inference_mode():
            p = net(x).softmax(1) + net(x.flip(-1)).softmax(1).flip(-1)
            p = F.interpolate(p / 2, size=self.plane, mode="bilinear", align_corners=False)
        return p.float().cpu().numpy()


def compact(target: torch.Tensor) -> torch.Tensor:
    """Class indices in the smallest dtype that holds them (``uint8`` below 256 classes):
    the training targets of many volumes stay small in memory."""
    return target.to(torch.uint8) if not target.numel() or int(target.max()) < 256 else target


def class_indices(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Map label values to their index in the sorted ``classes`` (0 first).

    Raises:
        ValueError: A value is not among ``classes``.
    """
    idx = np.searchsorted(classes, labels)
    idx = np.clip(idx, 0, len(classes) - 1)
    if not np.array_equal(classes[idx], labels):
        raise ValueError("labels hold values outside the classes")
    return idx.astype(np.int64)


def new_network(n_classes: int) -> torch.nn.Module:
    """The refinement network: a 2D U-Net, three slices in, ``n_classes`` out."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=len(NEIGHBOURS), out_channels=n_classes,
                channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=1)


def save_refiner(folder: str | Path, net: torch.nn.Module, *, classes: np.ndarray,
                 size: int) -> Path:
    """Write a trained refinement network (``model.safetensors`` + ``config.json``,
    atomically) so that later cases can be refined without training it again.

    Args:
        folder: Output folder, created if needed.
        net: The network (:func:`train_rounds`).
        classes: The label values it predicts, sorted, 0 first.
        size: Side of its input slices.

    Returns:
        The folder.
    """
    config = {"classes": [int(c) for c in classes], "size": int(size),
              "neighbours": list(NEIGHBOURS)}
    return save_model(folder, kind=KIND, config=config, state=net.state_dict())


def load_refiner(folder: str | Path, *,
                 device: torch.device | str = "cpu") -> tuple[torch.nn.Module, np.ndarray, int]:
    """Read a network written by :func:`save_refiner` (nothing is unpickled or executed).

    Returns:
        ``(network in evaluation mode, its label values, its input size)``.

    Raises:
        ModelError: The folder is missing, corrupt, of another kind, or its config and
            weights do not match.
    """
    config, state = load_model(folder, kind=KIND)
    try:
        classes = np.array([int(c) for c in config["classes"]], dtype=np.int64)
        size = int(config["size"])
        if list(config["neighbours"]) != list(NEIGHBOURS):
            raise ValueError(f"neighbours {config['neighbours']} are not {list(NEIGHBOURS)}")
        if len(classes) < 2 or classes[0] != 0 or np.any(np.diff(classes) <= 0):
            raise ValueError(f"classes {classes.tolist()} are not sorted label values from 0")
        if size < 16:
            raise ValueError(f"size {size} is below 16")
        net = new_network(len(classes))
        net.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"config and weights do not match ({first_line(exc)})",
                         folder) from None
    return net.to(torch.device(device)).eval(), classes, size


def _loss_function() -> Callable:
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def train_refiner(
    stacks: Sequence[SliceStack],
    targets: Sequence[torch.Tensor],
    annotated: Sequence[Sequence[int]],
    *,
    n_classes: int,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    start_from: torch.nn.Module | None = None,
) -> torch.nn.Module:
    """Train the refinement network on every volume's propagated labels.

    Args:
        stacks: The volumes (:class:`SliceStack`, one size).
        targets: Per volume, its propagated labels as class indices
            (:meth:`SliceStack.target`; any integer dtype, e.g. :func:`compact` ones).
        annotated: Per volume, its annotated slices (drawn ``annotated_weight`` times as
            often).
        n_classes: Number of classes, background included.
        config: Settings.
        device: Where to train.
        progress: Called as ``progress(step, steps)`` after each step.
        start_from: A trained network to go on training (a copy; it is left unchanged)
            instead of a new one.

    Returns:
        The trained network, in evaluation mode.
    """
    if not stacks or len(stacks) != len(targets) or len(stacks) != len(annotated):
        raise ValueError("one target and one list of annotated slices per volume")
    device = torch.device(device)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    owners = np.concatenate([np.full(len(s), i) for i, s in enumerate(stacks)])
    within = np.concatenate([np.arange(len(s)) for s in stacks])
    weights = np.ones(len(owners))
    offset = 0
    for stack, marks in zip(stacks, annotated, strict=True):
        weights[offset + np.asarray(list(marks), dtype=np.int64)] = config.annotated_weight
        offset += len(stack)
    weights /= weights.sum()
    net = (new_network(n_classes) if start_from is None else copy.deepcopy(start_from)).to(device)
    opt = torch.optim.AdamW(net.parameters(), config.lr, weight_decay=1e-4)
    loss_fn = _loss_function()
    net.train()
    start = time.monotonic()
    for step in range(config.steps):
        done = step / config.steps
        if config.max_time is not None:
            done = max(done, (time.monotonic() - start) / (config.max_time * 60))
            if step and done >= 1:
                break
        for group in opt.param_groups:  # cosine decay over the run
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * done))
        picks = rng.choice(len(owners), config.batch_size, p=weights)
        xb = torch.cat([stacks[owners[p]].inputs([within[p]]) for p in picks])
        yb = torch.stack([targets[owners[p]][within[p]] for p in picks])[:, None].long()
        for axis in (-1, -2):
            if rng.random() < 0.5:
                xb, yb = xb.flip(axis), yb.flip(axis)
        xb = xb * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
        loss = loss_fn(net(xb.to(device)), yb.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, config.steps)
    return net.eval()


def train_rounds(
    stacks: Sequence[SliceStack],
    propagated: Sequence[np.ndarray],
    annotations: Sequence[SliceAnnotation],
    classes: np.ndarray,
    *,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> torch.nn.Module:
    """Train the refinement network on every volume's propagated labels, then, for each
    further round (``config.rounds``), go on training it on every volume's refined labels
    (:func:`refine_volume` with the network so far), which are closer to the truth than the
    propagated ones.

    Args:
        stacks: The volumes (:class:`SliceStack`, one size).
        propagated: Per volume, its propagated labels, ``(N, H, W)`` label values. Each is
            read once per round and not kept (a sequence that reads its items from disk on
            access holds one volume's labels in memory at a time).
        annotations: Per volume, its annotated slices.
        classes: Sorted label values of the dataset, 0 first.
        config: Settings.
        device: Where to train.
        progress: Called as ``progress(step, steps * rounds)`` after each step.

    Returns:
        The trained network, in evaluation mode. With ``config.max_time`` each round has
        its share of the time.
    """
    total = config.steps * config.rounds
    if config.max_time is not None:  # the time limit is the whole training's
        config = replace(config, max_time=config.max_time / config.rounds)
    if not len(stacks) == len(propagated) == len(annotations):
        raise ValueError("one propagated label stack and one annotation per volume")
    marks = [ann.indices for ann in annotations]
    net = None
    for round_ in range(config.rounds):
        targets = []
        for i, (stack, ann) in enumerate(zip(stacks, annotations, strict=True)):
            labels = (ann.restore(np.array(propagated[i], copy=True)) if net is None else
                      refine_volume(net, stack, propagated[i], ann, classes, config=config,
                                    device=device))
            targets.append(compact(stack.target(class_indices(labels, classes))))
        offset = round_ * config.steps
        net = train_refiner(
            stacks, targets, marks, n_classes=len(classes), config=config, device=device,
            start_from=net,
            progress=None if progress is None else
            lambda done, _, offset=offset: progress(offset + done, total))
    return net


def finetune_refiner(
    net: torch.nn.Module,
    stack: SliceStack,
    target: torch.Tensor,
    slices: Sequence[int],
    *,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """A copy of ``net`` fine-tuned on one volume's annotated ``slices`` (``target``: the
    volume's labels as class indices, right on those slices); ``net`` is left unchanged."""
    tuned = copy.deepcopy(net)
    if config.finetune_steps == 0 or not len(slices):
        return tuned.eval()
    device = torch.device(device)
    rng = np.random.default_rng(config.seed)
    idx = np.asarray(list(slices), dtype=np.int64)
    xb, yb = stack.inputs(idx).to(device), target[idx][:, None].to(device)
    opt = torch.optim.Adam(tuned.parameters(), config.finetune_lr)
    loss_fn = _loss_function()
    tuned.train()
    for _ in range(config.finetune_steps):
        flip = rng.random() < 0.5
        loss = loss_fn(tuned(xb.flip(-1) if flip else xb), yb.flip(-1) if flip else yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuned.eval()


def fuse(propagated: np.ndarray, probabilities: np.ndarray, *, sigma: float,
         weight: float = 1.0) -> np.ndarray:
    """Fuse propagated labels with the network's probabilities.

    Args:
        propagated: Class indices, ``(B, H, W)``.
        probabilities: The network's class probabilities, ``(B, C, H, W)``.
        sigma: In-plane smoothing of the propagated labels (pixels; 0: none).
        weight: Weight of the propagated labels (0: the network's argmax).

    Returns:
        Class indices ``(B, H, W)``: per pixel the class maximising
        ``weight * log q + log p``, ``q`` the smoothed one-hot propagated labels and ``p``
        the network's, both floored at :data:`FLOOR`.
    """
    if weight == 0:
        return probabilities.argmax(1)
    n_classes = probabilities.shape[1]
    one_hot = (propagated[:, None] == np.arange(n_classes)[None, :, None, None])
    soft = one_hot.astype(np.float32)
    if sigma > 0:
        soft = ndimage.gaussian_filter(soft, (0, 0, sigma, sigma))
    score = weight * np.log(np.maximum(soft, FLOOR)) + np.log(np.maximum(probabilities, FLOOR))
    return score.argmax(1)


def refine_volume(
    net: torch.nn.Module,
    stack: SliceStack,
    propagated: np.ndarray,
    annotation: SliceAnnotation,
    classes: np.ndarray,
    *,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Refine one volume's propagated labels (slices first, label values): fine-tune the
    network on its annotated slices (:func:`finetune_refiner`), then :func:`fused_labels`.

    Args:
        net: The trained refinement network (:func:`train_refiner`).
        stack: The volume (:class:`SliceStack`).
        propagated: Its propagated labels, ``(N, H, W)`` label values.
        annotation: Its annotated slices (kept exactly; the fine-tuning's labels).
        classes: Sorted label values of the dataset, 0 first.
        config: Settings.
        device: Where to compute.

    Returns:
        The refined label stack, ``(N, H, W)``, ``propagated``'s dtype.
    """
    tuned = tune_to_volume(net, stack, propagated, annotation, classes, config=config,
                           device=device)
    return refine_tuned(tuned, stack, propagated, annotation, classes, config=config,
                        device=device)


def tune_to_volume(
    net: torch.nn.Module,
    stack: SliceStack,
    propagated: np.ndarray,
    annotation: SliceAnnotation,
    classes: np.ndarray,
    *,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """A copy of ``net`` fine-tuned on one volume's annotated slices (:func:`finetune_refiner`,
    the labels taken from ``propagated`` with the annotated slices put back), the first step
    of :func:`refine_volume`. Arguments as for :func:`refine_volume`."""
    prop_idx = class_indices(annotation.restore(propagated.copy()), classes)
    return finetune_refiner(net, stack, stack.target(prop_idx), annotation.indices,
                            config=config, device=device)


def refine_tuned(
    tuned: torch.nn.Module,
    stack: SliceStack,
    propagated: np.ndarray,
    annotation: SliceAnnotation,
    classes: np.ndarray,
    *,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """:func:`fused_labels` at ``config``'s fusion settings, the second step of
    :func:`refine_volume` (``tuned`` from :func:`tune_to_volume`)."""
    return refine_tuned_with_doubt(tuned, stack, propagated, annotation, classes,
                                   config=config, device=device, doubt=False)[0]


def refine_tuned_with_doubt(
    tuned: torch.nn.Module,
    stack: SliceStack,
    propagated: np.ndarray,
    annotation: SliceAnnotation,
    classes: np.ndarray,
    *,
    config: RefineConfig = RefineConfig(),
    device: torch.device | str = "cpu",
    doubt: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`refine_tuned` and (with ``doubt``) :func:`network_doubt` in one pass of the
    network over the volume: ``(refined labels, per-slice doubt or None)``."""
    return _fuse_volume(tuned, stack, propagated, annotation, classes, sigma=config.sigma,
                        weight=config.propagation_weight, z_sigma=config.z_sigma,
                        batch_size=config.batch_size, device=device, doubt=doubt)


def network_doubt(
    tuned: torch.nn.Module,
    stack: SliceStack,
    propagated: np.ndarray,
    annotation: SliceAnnotation,
    classes: np.ndarray,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Per slice, the refinement network's doubt about it: the summed ``1 - p(winning class)``
    of its pixels plus the pixels where the network's choice differs from the propagated
    labels (the form of a propagation's own doubt, :mod:`sparseseg.oneseg.suggestion`).

    Args:
        tuned: The network (fine-tuned on the volume's annotated slices).
        stack: The volume (:class:`SliceStack`).
        propagated: Its propagated labels, ``(N, H, W)`` label values.
        annotation: Its annotated slices (doubt 0 there).
        classes: Sorted label values of the network, 0 first.
        batch_size: Slices per forward pass.
        device: Where to compute.

    Returns:
        ``(N,)`` doubt in pixels.
    """
    device = torch.device(device)
    prop_idx = class_indices(annotation.restore(propagated.copy()), classes)
    doubt = np.zeros(len(stack))
    for index, probs, _ in _probability_batches(tuned, stack, batch_size, 0.0, device):
        doubt[index] = _doubt_of(probs, prop_idx[index])
    doubt[annotation.indices] = 0
    return doubt


def _doubt_of(probs: np.ndarray, prop_idx: np.ndarray) -> np.ndarray:
    """:func:`network_doubt` of a batch: ``(B, C, H, W)`` probabilities, ``(B, H, W)``
    propagated class indices."""
    return (1 - probs.max(1)).sum((1, 2)) + (probs.argmax(1) != prop_idx).sum((1, 2))


def _probability_batches(
    tuned: torch.nn.Module, stack: SliceStack, batch_size: int, z_sigma: float,
    device: torch.device,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(index, probabilities, probabilities smoothed across slices)`` batch by batch over
    the volume (the smoothing as over the whole volume: each batch is computed with a halo
    of the slices its kernel reaches; the same array twice when ``z_sigma`` is 0)."""
    halo = int(Z_TRUNCATE * z_sigma + 0.5)
    n = len(stack)
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        lo, hi = max(0, start - halo), min(n, index[-1] + 1 + halo)
        probs = stack.probabilities(tuned, np.arange(lo, hi), device)
        smooth = probs
        if z_sigma > 0:
            smooth = ndimage.gaussian_filter1d(probs, z_sigma, axis=0, mode="nearest",
                                               truncate=Z_TRUNCATE)
        inner = slice(index[0] - lo, index[-1] + 1 - lo)
        yield index, probs[inner], smooth[inner]


def fused_labels(
    tuned: torch.nn.Module,
    stack: SliceStack,
    propagated: np.ndarray,
    annotation: SliceAnnotation,
    classes: np.ndarray,
    *,
    sigma: float,
    weight: float,
    z_sigma: float = 0.0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The network (already fine-tuned on this volume) fused with the propagated labels
    (:func:`fuse`), slice batch by slice batch; annotated slices put back exactly; each
    label's largest component (and those touching its annotated pixels).

    Args:
        tuned: The network fine-tuned on this volume (:func:`finetune_refiner`).
        stack: The volume (:class:`SliceStack`).
        propagated: Its propagated labels, ``(N, H, W)`` label values.
        annotation: Its annotated slices.
        classes: Sorted label values of the dataset, 0 first.
        sigma: In-plane smoothing of the propagated labels (pixels).
        weight: Weight of the propagated labels (:func:`fuse`).
        z_sigma: Smoothing of the network's probabilities across slices (slices).
        batch_size: Slices per forward pass.
        device: Where to compute.

    Returns:
        The refined label stack, ``(N, H, W)``, ``propagated``'s dtype.
    """
    return _fuse_volume(tuned, stack, propagated, annotation, classes, sigma=sigma,
                        weight=weight, z_sigma=z_sigma, batch_size=batch_size,
                        device=device)[0]


def _fuse_volume(
    tuned: torch.nn.Module, stack: SliceStack, propagated: np.ndarray,
    annotation: SliceAnnotation, classes: np.ndarray, *, sigma: float, weight: float,
    z_sigma: float, batch_size: int, device: torch.device | str, doubt: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`fused_labels` and, with ``doubt``, :func:`network_doubt` from the same pass of
    the network over the volume."""
    device = torch.device(device)
    prop_idx = class_indices(annotation.restore(propagated.copy()), classes)
    out = np.empty_like(propagated)
    per_slice = np.zeros(len(stack)) if doubt else None
    for index, raw, probs in _probability_batches(tuned, stack, batch_size, z_sigma, device):
        out[index] = classes[fuse(prop_idx[index], probs, sigma=sigma, weight=weight)]
        if per_slice is not None:
            per_slice[index] = _doubt_of(raw, prop_idx[index])
    annotation.restore(out)
    if per_slice is not None:
        per_slice[annotation.indices] = 0
    return largest_component(out, anchor=annotation.volume(axis=0)), per_slice
