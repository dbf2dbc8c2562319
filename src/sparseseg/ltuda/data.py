"""Loading partially labeled datasets as normalised, resized 2D slices.

Each case becomes ``(slices, size, size)`` images, ``(slices, organs, size, size)`` organ
masks, and the per-organ flags of the organs its dataset labels. Slices are taken along
:data:`sparseseg.io.SLICE_AXIS` and resized (bilinear, masks via bilinear then 0.5) to the
network's square input; predictions are resized back to the original grid.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from sparseseg.errors import InputError, SparsesegError
from sparseseg.io import find_cases, read_label, read_volume, to_slices
from sparseseg.ltuda.normalize import normalize_intensity
from sparseseg.ltuda.spec import DatasetSpec

log = logging.getLogger(__name__)


@dataclass
class SliceCase:
    """One training volume as network-ready slices.

    Args:
        name: Case name.
        dataset: Index of its dataset in the spec list.
        image: ``(S, size, size)`` float32 normalised slices.
        target: ``(S, organs, size, size)`` uint8 organ masks (0 = background or unknown).
        labeled: ``(organs,)`` bool, organs whose masks are known for this case.
    """

    name: str
    dataset: int
    image: np.ndarray
    target: np.ndarray
    labeled: np.ndarray


def resize_slices(slices: np.ndarray | torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``(S, C, H, W)`` or ``(S, H, W)`` data bilinearly (antialiased when shrinking)."""
    if isinstance(slices, np.ndarray):
        slices = np.asarray(slices, np.float32)
    x = torch.as_tensor(slices)
    squeeze = x.ndim == 3
    if squeeze:
        x = x[:, None]
    out_size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) != out_size:
        shrink = out_size[0] < x.shape[-2] or out_size[1] < x.shape[-1]
        x = F.interpolate(x.float(), size=out_size, mode="bilinear", align_corners=False,
                          antialias=shrink)
    return x[:, 0] if squeeze else x


def prepare_image(array: np.ndarray, size: int) -> np.ndarray:
    """Normalise a volume and return its ``(S, size, size)`` float32 slices."""
    slices = to_slices(normalize_intensity(array))
    return resize_slices(slices, size).numpy()


def load_cases(
    specs: Sequence[DatasetSpec], organs: Sequence[str], size: int
) -> list[SliceCase]:
    """Read every case of every dataset, checking labels against the specs.

    Args:
        specs: The datasets and the label values of the organs each labels.
        organs: All organ names; channel ``k`` is ``organs[k]``.
        size: Network input size.

    Raises:
        InputError: A dataset has no images, a label is missing, or an image and its label
            differ in shape. A label value that never occurs is only warned about.
    """
    out = []
    for index, spec in enumerate(specs):
        cases = find_cases(spec.path, with_labels=True)
        labeled = np.array([name in spec.organs for name in organs])
        seen: set[int] = set()
        for case in cases:
            image = read_volume(case.image)
            label = read_label(case.label)
            if image.shape != label.shape:
                raise InputError(
                    f"image shape {image.shape} differs from label shape {label.shape}",
                    case.label,
                )
            seen.update(int(v) for v in np.unique(label.array))
            masks = np.zeros((len(organs),) + label.shape, np.float32)
            for k, name in enumerate(organs):
                if name in spec.organs:
                    masks[k] = np.isin(label.array, spec.organs[name])
            target = np.stack([to_slices(m) for m in masks], axis=1)  # (S, organs, H, W)
            target = (resize_slices(target, size).numpy() >= 0.5).astype(np.uint8)
            out.append(SliceCase(case.name, index, prepare_image(image.array, size), target,
                                 labeled))
        for name, values in spec.organs.items():
            missing = [v for v in values if v not in seen]
            if missing:
                log.warning("%s: label value(s) %s of organ %r never occur in its labels",
                            spec.path, ",".join(map(str, missing)), name)
    return out


def split_validation(
    cases: Sequence[SliceCase], fraction: float, rng: np.random.Generator, *,
    subject: Callable[[str], str] | None = None,
) -> tuple[list[SliceCase], list[SliceCase]]:
    """Hold out ``fraction`` of each dataset's cases (at least one if it has two or more).

    Validation uses only the training data's own partial labels; test data is never seen.

    Args:
        cases: The training datasets' cases.
        fraction: Share of each dataset held out.
        rng: Random generator.
        subject: Names the subject (patient) of a case from its name. Cases of one subject
            then stay on one side: ``fraction`` counts subjects, so that validation measures
            patients the network did not train on (two frames of one patient are nearly the
            same image). Default: every case is its own subject.
    """
    train, val = [], []
    for dataset in sorted({c.dataset for c in cases}):
        group = [c for c in cases if c.dataset == dataset]
        units: dict[str, list[SliceCase]] = {}
        for i, c in enumerate(group):
            units.setdefault(subject(c.name) if subject else str(i), []).append(c)
        members = list(units.values())
        n_val = round(fraction * len(members)) if fraction > 0 else 0
        if fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        order = rng.permutation(len(members))
        val += [c for i in order[:n_val] for c in members[i]]
        train += [c for i in order[n_val:] for c in members[i]]
    return train, val


def subject_pattern(pattern: str) -> Callable[[str], str]:
    """A ``subject`` for :func:`split_validation` from a regular expression.

    The subject of a case is the first match of ``pattern`` in its name (its first group,
    if it has one); a name without a match is a subject of its own.

    Raises:
        SparsesegError: ``pattern`` is not a valid regular expression.
    """
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise SparsesegError(f"val_group {pattern!r} is not a regular expression: {err}") from None

    def subject(name: str) -> str:
        match = regex.search(name)
        if match is None:
            return f"\0{name}"  # its own subject, never equal to a matched one
        return (match.group(1) if regex.groups else None) or match.group(0)

    return subject


class SliceSampler:
    """Draws batches that mix datasets: each batch cycles through a shuffled dataset order.

    Args:
        cases: Training cases.
        batch_size: Slices per batch.
        rng: Random generator.
    """

    def __init__(self, cases: Sequence[SliceCase], batch_size: int, rng: np.random.Generator):
        self.cases = list(cases)
        self.batch_size = batch_size
        self.rng = rng
        self.by_dataset: dict[int, list[tuple[int, int]]] = {}
        for ci, case in enumerate(self.cases):
            for s in range(case.image.shape[0]):
                self.by_dataset.setdefault(case.dataset, []).append((ci, s))
        self.datasets = sorted(self.by_dataset)
        self.n_slices = sum(len(v) for v in self.by_dataset.values())

    def __len__(self) -> int:
        """Batches per epoch (one pass over the slices on average)."""
        return max(1, -(-self.n_slices // self.batch_size))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images (B,1,H,W), targets (B,organs,H,W), labeled (B,organs))`` float tensors."""
        order = list(self.rng.permutation(self.datasets))
        picks = []
        for b in range(self.batch_size):
            pool = self.by_dataset[order[b % len(order)]]
            picks.append(pool[self.rng.integers(len(pool))])
        images = np.stack([self.cases[c].image[s] for c, s in picks])[:, None]
        targets = np.stack([self.cases[c].target[s] for c, s in picks])
        labeled = np.stack([self.cases[c].labeled for c, _ in picks])
        return (torch.from_numpy(images).float(), torch.from_numpy(targets).float(),
                torch.from_numpy(labeled).float())
