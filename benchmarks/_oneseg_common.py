"""Shared helpers of the OneSeg benchmarks: data split, training, start slices, scoring, tables."""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from sparseseg import oneseg
from sparseseg.io import SLICE_AXIS, Case, Volume, find_cases
from sparseseg.metrics import dice
from sparseseg.oneseg.baselines import MODEL_METHODS
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.training import TrainConfig

START_NAMES = ("screened", "volume_middle", "largest", "middle")
"""Where the annotated slice comes from: OneSeg's screening (Eq. 5-7, organ-blind),
``oneseg select --criterion middle`` (middle of the slices holding structure, also
organ-blind), the slice of largest label area, or the middle of the label's slice extent."""


def leftatrium_split(data: str | Path, n_train: int, limit: int | None = None
                     ) -> tuple[list[Case], list[Case]]:
    """The first ``n_train`` LeftAtrium cases train, the rest (at most ``limit``) validate."""
    cases = find_cases(data, with_labels=True)
    train, val = cases[:n_train], cases[n_train:]
    if limit:
        val = val[:limit]
    return train, val


def add_training_options(parser: argparse.ArgumentParser, *, max_time: float, epochs: int = 6,
                         pairs_per_epoch: int = 1600) -> None:
    """Options shared by the scripts that train OneSeg."""
    parser.add_argument("--max-time", type=float, default=max_time,
                        help="training minutes (0: no limit, train --epochs epochs)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--pairs-per-epoch", type=int, default=pairs_per_epoch,
                        help="training samples per epoch (steps = this / batch size 8)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--stages", type=int, default=2, help="ResNet-18 stages kept (2-4)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.05, help="training temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="training arithmetic (auto: bf16 on CPUs with AMX)")
    parser.add_argument("--no-cycle", dest="cycle", action="store_false",
                        help="train without cycle consistency (ablation)")
    parser.add_argument("--no-scheduled-sampling", dest="scheduled_sampling",
                        action="store_false", help="train without scheduled sampling (ablation)")


def train_configs(args: argparse.Namespace, **variant: object
                  ) -> tuple[NetworkConfig, TrainConfig]:
    """Network and training settings from the options of :func:`add_training_options`.

    ``variant`` holds ablation settings: ``bottleneck`` (network), ``pairs``, ``local_chains``,
    ``scheduled_sampling``, ``cycle`` (training); they override ``args.cycle`` and
    ``args.scheduled_sampling``.
    """
    variant = {"cycle": args.cycle, "scheduled_sampling": args.scheduled_sampling, **variant}
    net_keys = {"bottleneck"}
    network = NetworkConfig(width=args.width, stages=args.stages, temperature=args.temperature,
                            **{k: v for k, v in variant.items() if k in net_keys})
    training = TrainConfig(epochs=args.epochs, max_time=args.max_time or None, size=args.size,
                           seed=args.seed, lr=args.lr, pairs_per_epoch=args.pairs_per_epoch,
                           precision=args.precision,
                           **{k: v for k, v in variant.items() if k not in net_keys})
    return network, training


def train_model(
    images: Sequence[str | Path],
    output: Path,
    args: argparse.Namespace,
    **variant: object,
) -> tuple[OneSegModel, float]:
    """Train OneSeg on ``images`` (labels never read) into ``output``; return it and seconds.

    ``args`` and ``variant`` are those of :func:`train_configs`.
    """
    network, training = train_configs(args, **variant)
    start = time.monotonic()
    oneseg.train(images=list(images), output=output, network=network, training=training,
                 device="cpu", progress=False)
    return OneSegModel.load(output), time.monotonic() - start


def start_run(args: argparse.Namespace) -> Path:
    """Log to the console, use ``args.threads`` threads, create ``args.out``; return it."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_or_train(args: argparse.Namespace, images: Sequence[str | Path], default: Path
                  ) -> tuple[OneSegModel, Path, float]:
    """The model of ``args.model``, or one trained on ``images`` into ``default`` (labels never
    read); returns it, its folder and the training seconds (0 when loaded)."""
    if args.model:
        return OneSegModel.load(args.model), Path(args.model), 0.0
    model, seconds = train_model(images, default, args)
    return model, default, seconds


def slice_areas(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels of each slice along the slice axis."""
    other = tuple(a for a in range(mask.ndim) if a != SLICE_AXIS)
    return np.asarray(mask, bool).sum(axis=other)


def organ_starts(mask: np.ndarray) -> dict[str, int]:
    """The largest-area slice and the middle slice of the label's extent."""
    areas = slice_areas(mask)
    present = np.nonzero(areas)[0]
    if len(present) == 0:
        raise ValueError("empty label: no slice to annotate")
    return {"largest": int(np.argmax(areas)),
            "middle": int((present[0] + present[-1]) // 2)}


def start_slices(model: OneSegModel, image: Volume, mask: np.ndarray,
                 names: Sequence[str] = START_NAMES) -> dict[str, int]:
    """Start slices by name (see :data:`START_NAMES`); screening needs the model."""
    starts = organ_starts(mask)
    if "screened" in names:
        starts["screened"] = oneseg.select(model=model, image=image, device="cpu")
    if "volume_middle" in names:
        starts["volume_middle"] = oneseg.select(
            model=model, image=image, criterion="middle", device="cpu"
        )
    return {n: starts[n] for n in names}


def one_slice(label: np.ndarray, k: int) -> np.ndarray:
    """``label`` on slice ``k`` only (zeros elsewhere)."""
    ann = np.zeros(label.shape, np.uint8)
    sl: list[slice | int] = [slice(None)] * label.ndim
    sl[SLICE_AXIS] = k
    ann[tuple(sl)] = label[tuple(sl)]
    return ann


def propagate(model: OneSegModel | None, image: Volume, annotation: np.ndarray, method: str,
              verify: bool = False, anchor: bool = True) -> tuple[np.ndarray, float]:
    """Propagate with one method; an empty annotation gives an empty result (nothing to do).

    ``anchor=False`` copies from the last propagated slice only (the paper's chain).
    """
    start = time.monotonic()
    if not annotation.any():
        return np.zeros(annotation.shape, np.uint8), 0.0
    result = oneseg.propagate(model=model if method in MODEL_METHODS else None, image=image,
                              annotation=annotation, method=method, verify=verify,
                              anchor=anchor, device="cpu").array
    return result, time.monotonic() - start


def slice_dice_by_distance(pred: np.ndarray, truth: np.ndarray, k0: int) -> list[dict]:
    """2D Dice of every slice where prediction or truth is non-empty, with its distance to k0.

    Slices where the prediction leaks past the organ (or vanishes inside it) score 0.
    """
    p, t = to_stack(pred), to_stack(truth)
    rows = []
    for k in range(p.shape[0]):
        pa, ta = int(p[k].sum()), int(t[k].sum())
        if pa == 0 and ta == 0:  # not scored (metrics.dice would say 1)
            continue
        rows.append({"slice": k, "distance": k - k0, "dice": dice(p[k], t[k]),
                     "truth_area": ta, "pred_area": pa})
    return rows


def to_stack(mask: np.ndarray) -> np.ndarray:
    """Boolean mask with the slice axis first."""
    return np.moveaxis(np.asarray(mask, bool), SLICE_AXIS, 0)


def mean_by_distance(rows: Iterable[Mapping], *, bin_width: int, methods: Sequence[str]
                     ) -> dict[str, tuple[list[float], list[float], list[int]]]:
    """Mean slice Dice per ``|distance|`` bin for each method: ``(bin starts, means, counts)``."""
    rows = list(rows)
    out = {}
    top = max((abs(int(r["distance"])) for r in rows), default=0)
    edges = list(range(0, top + 1, bin_width))
    for method in methods:
        xs, ys, ns = [], [], []
        for lo in edges:
            sel = [float(r["dice"]) for r in rows if r["method"] == method
                   and lo <= abs(int(r["distance"])) < lo + bin_width]
            if sel:
                xs.append(float(lo))
                ys.append(float(np.mean(sel)))
                ns.append(len(sel))
        out[method] = (xs, ys, ns)
    return out


def mean_table(rows: Sequence[Mapping], keys: Sequence[str],
               metrics: Sequence[str] = ("dice", "ravd", "assd", "seconds")) -> list[dict]:
    """Mean of ``metrics`` over rows grouped by ``keys`` (first-seen order), with counts.

    Infinite values (RAVD of an empty reference) are left out of a mean; the ``n`` column
    counts rows.
    """
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        row = dict(zip(keys, key, strict=True))
        for m in metrics:
            vals = [float(r[m]) for r in members if math.isfinite(float(r[m]))]
            row[m] = float(np.mean(vals)) if vals else float("nan")
        row["n"] = len(members)
        out.append(row)
    return out


def format_table(rows: Sequence[Mapping], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table; ``columns`` are ``(key, header, format)`` (format ``""``: text)."""
    widths = []
    for key, header, fmt in columns:
        cells = [format(r[key], fmt) if fmt else str(r[key]) for r in rows]
        widths.append(max([len(header), *map(len, cells)]))
    lines = [" ".join(f"{h:<{w}}" if not f else f"{h:>{w}}"
                      for (_, h, f), w in zip(columns, widths, strict=True))]
    for r in rows:
        lines.append(" ".join(
            f"{format(r[k], f):>{w}}" if f else f"{r[k]!s:<{w}}"
            for (k, _, f), w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


METRIC_COLUMNS = (("dice", "DICE", ".3f"), ("ravd", "RAVD %", ".1f"), ("assd", "ASSD mm", ".2f"))
"""Columns of the usual CHAOS summary."""
