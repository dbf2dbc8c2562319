"""Dice against the number of annotated slices: the annotation loop, simulated.

For every case (and every structure of it, scored on its own), an annotator draws the middle
slice of the structure's extent (``--start largest``: its largest-area slice, for ``suggest``
and ``random``), then adds slices one at a time up to ``--slices``, chosen

* ``suggest``: by ``sparseseg oneseg suggest`` on the current result (the method's own
  propagation; interpolation, which has no uncertainty, takes OneSeg's suggestions, so it
  needs ``oneseg`` among the methods);
* ``uniform``: ``n`` slices at the centres of ``n`` equal parts of the structure's extent
  (an annotator who knows where the structure is and spreads her slices evenly);
* ``random``: random slices of the extent (nested: slice ``n + 1`` adds one to the first
  ``n``; seeded per case).

Each annotated slice is the true label of that slice (possibly empty: a suggestion outside the
structure is then annotated "nothing here", as a clinician would erase a leak). After each
addition the volume is propagated with each method (``oneseg``, ``registration``: chained
demons, ``interpolation``: morphological contour interpolation, from 2 slices; ``hybrid``,
OneSeg and registration mixed at every step, on request) and scored
against the full label (3D Dice). With ``--mark-ends`` the annotator also marks the first slice
past each end of the structure as empty (``oneseg propagate --empty-slice``), for every method
and strategy.

Datasets: ``leftatrium`` (held-out cases: OneSeg trained on the images of the first 30),
``cardiac`` (per structure RV / myocardium / LV; OneSeg trained on all Cardiac images, labels
never read), ``abdomen`` (AbdomenTS CT and MR, per organ; OneSeg trained on those two images).

Writes ``annotation_curve_DATASET.csv`` (one row per case, structure, method, strategy and
number of slices) and ``annotation_curve_DATASET.png`` (mean Dice vs slices) to ``--out``.

Run from the repository root::

    python -m benchmarks.annotation_curve --dataset leftatrium \\
        --model benchmarks/results/curve_model_leftatrium
    python -m benchmarks.annotation_curve --dataset cardiac --max-time 6
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks import _plot
from benchmarks._oneseg_common import (
    add_training_options,
    format_table,
    load_or_train,
    start_run,
)
from benchmarks._tables import write_csv
from sparseseg import oneseg
from sparseseg.io import SLICE_AXIS, Case, Volume, find_cases, read_label, read_volume
from sparseseg.metrics import dice
from sparseseg.oneseg.annotation import SliceAnnotation, with_empty_slices
from sparseseg.oneseg.baselines import MODEL_METHODS
from sparseseg.oneseg.intensity import INTENSITY_WEIGHT
from sparseseg.oneseg.model import OneSegModel

DATASETS = {
    "leftatrium": ("../shared/data/LeftAtrium", 30),
    "cardiac": ("../shared/data/Cardiac", 0),
    "abdomen": ("../shared/data/AbdomenTS", 0),
}
"""Name: (folder, number of leading cases whose images train OneSeg and are not scored; 0:
train on every image and score every case)."""

STRATEGIES = ("suggest", "uniform", "random")
METHODS = ("oneseg", "hybrid", "registration", "interpolation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="leftatrium")
    parser.add_argument("--data", default=None, help="dataset folder (default: by --dataset)")
    add_training_options(parser, max_time=15.0)
    parser.add_argument("--model", default=None, help="reuse this model folder (skip training)")
    parser.add_argument("--slices", type=int, default=5, help="annotate 1..N slices")
    parser.add_argument("--methods", default="oneseg,registration,interpolation",
                        help=f"comma-separated among {','.join(METHODS)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--registration-strategies", default="uniform,suggest",
                        help="strategies run with registration (slow: ~10-30 s a volume)")
    parser.add_argument("--start", choices=("middle", "largest"), default="middle",
                        help="first slice of suggest and random: the middle of the "
                        "structure's extent (= uniform with 1 slice) or its largest-area slice")
    parser.add_argument("--criterion", default="gain",
                        help="suggest criterion (gain, uncertainty, distance)")
    parser.add_argument("--cross-check", default=None, metavar="METHOD",
                        help="suggest with --cross-check METHOD (its disagreement added to "
                        "the doubt; not for METHOD's own curve)")
    parser.add_argument("--fusion", default="union", help="fusion between slices")
    parser.add_argument("--mark-ends", action="store_true",
                        help="also annotate the first slice past each end of the structure "
                        "as empty (--empty-slice)")
    parser.add_argument("--intensity-weight", type=float, default=INTENSITY_WEIGHT,
                        help="weight of the scan's intensities in the label decision "
                        "(0: the propagation's argmax, as before 2026-12-06)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many cases")
    parser.add_argument("--labels", default=None, help="structures to score (default: all)")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def uniform_slices(lo: int, hi: int, n: int) -> list[int]:
    """``n`` slices at the centres of ``n`` equal parts of ``lo..hi``."""
    length = hi - lo + 1
    return sorted({min(hi, int(lo + (i + 0.5) * length / n)) for i in range(n)})


def _annotation(mask: np.ndarray, ks: list[int], ends: list[int] = ()) -> SliceAnnotation:
    """The true label on slices ``ks``, and slices ``ends`` annotated empty."""
    stack = np.moveaxis(mask, SLICE_AXIS, 0).astype(np.uint8)
    ann = SliceAnnotation({int(k): stack[k] for k in ks}, n_slices=stack.shape[0])
    return with_empty_slices(ann, [k for k in ends if k not in ks])


def end_marks(lo: int, hi: int, n_slices: int) -> list[int]:
    """The first slice past each end of the extent ``lo..hi`` that lies in the volume."""
    return [k for k in (lo - 1, hi + 1) if 0 <= k < n_slices]


def _score(pred: np.ndarray, mask: np.ndarray) -> float:
    return float(dice(pred > 0, mask))


def _propagate(model: OneSegModel, image: Volume, ann: SliceAnnotation, method: str,
               fusion: str, intensity_weight: float = INTENSITY_WEIGHT) -> np.ndarray:
    if method == "interpolation" and len(ann.drawn_slices(1)) < 2:
        # A suggestion outside the structure left one drawn slice (and an empty one):
        # nothing to interpolate, the result is the drawn slice.
        return ann.volume()
    return oneseg.propagate(model=model if method in MODEL_METHODS else None, image=image,
                            annotation=ann, method=method, fusion=fusion,
                            intensity_weight=intensity_weight, device="cpu").array


def structure_runs(model: OneSegModel, image: Volume, mask: np.ndarray, *, methods: list[str],
                   strategies: list[str], reg_strategies: set[str], n_max: int,
                   criterion: str, fusion: str, seed: int, start_at: str = "middle",
                   intensity_weight: float = INTENSITY_WEIGHT,
                   mark_ends: bool = False, cross_check: str | None = None) -> list[dict]:
    """All rows of one structure of one case (``mark_ends``: :func:`end_marks` annotated
    empty in every annotation; ``cross_check``: as for ``oneseg.suggest``)."""
    stack = np.moveaxis(mask, SLICE_AXIS, 0)
    present = np.flatnonzero(stack.reshape(stack.shape[0], -1).any(axis=1))
    lo, hi = int(present[0]), int(present[-1])
    ends = end_marks(lo, hi, stack.shape[0]) if mark_ends else []
    areas = stack.reshape(stack.shape[0], -1).sum(axis=1)
    start = uniform_slices(lo, hi, 1)[0] if start_at == "middle" else int(np.argmax(areas))
    rows = []
    rng = np.random.default_rng(seed)
    others = [k for k in range(lo, hi + 1) if k != start]
    random_order = [start, *rng.permutation(others).tolist()]
    suggested: dict[str, list[int]] = {}  # the order in which each propagator suggested
    for method in sorted(methods, key=lambda m: m == "interpolation"):
        for strategy in strategies:
            if method == "registration" and strategy not in reg_strategies:
                continue
            if strategy == "suggest" and method != "interpolation":
                curve, suggested[method] = _suggest_curve(
                    model, image, mask, method, start, n_max, criterion, fusion,
                    intensity_weight, ends,
                    cross_check if cross_check != method else None)
                rows += curve
                continue
            if strategy == "suggest" and "oneseg" not in suggested:
                continue  # interpolation follows OneSeg's suggestions
            for n in range(1, n_max + 1):
                if method == "interpolation" and n < 2:
                    continue
                ks = (uniform_slices(lo, hi, n) if strategy == "uniform"
                      else sorted(random_order[:n]) if strategy == "random"
                      else sorted(suggested["oneseg"][:n]))
                if len(ks) < n:
                    break  # the structure has fewer slices than that
                t0 = time.monotonic()
                pred = _propagate(model, image, _annotation(mask, ks, ends), method, fusion,
                                  intensity_weight)
                rows.append({"method": method, "strategy": strategy, "n": n,
                             "slices": " ".join(map(str, ks)), "dice": _score(pred, mask),
                             "seconds": time.monotonic() - t0})
    return rows


def _suggest_curve(model: OneSegModel, image: Volume, mask: np.ndarray, method: str,
                   start: int, n_max: int, criterion: str, fusion: str,
                   intensity_weight: float = INTENSITY_WEIGHT, ends: list[int] = (),
                   cross_check: str | None = None) -> tuple[list[dict], list[int]]:
    """Start at ``start``, then add the slice ``method``'s own propagation suggests, until
    ``n_max`` slices; the rows and the slices in the order they were added."""
    ks = [start]
    rows = []
    for n in range(1, n_max + 1):
        t0 = time.monotonic()
        found = oneseg.suggest(model=model if method in MODEL_METHODS else None, image=image,
                               annotation=_annotation(mask, ks, ends), method=method,
                               criterion=criterion, fusion=fusion,
                               intensity_weight=intensity_weight, cross_check=cross_check,
                               device="cpu")
        rows.append({"method": method, "strategy": "suggest", "n": n,
                     "slices": " ".join(map(str, sorted(ks))),
                     "dice": _score(found.labels.array, mask),
                     "seconds": time.monotonic() - t0})
        if n < n_max:
            ks.append(found.slice)
    return rows, ks


def dataset_cases(name: str, data: Path) -> tuple[list[Case], list[Case]]:
    """``(training images, scored cases)`` of a dataset."""
    cases = find_cases(data, with_labels=True)
    n_train = DATASETS[name][1]
    return (cases[:n_train], cases[n_train:]) if n_train else (cases, cases)


def summary(rows: list[dict], n_max: int) -> list[dict]:
    """Mean Dice per method and strategy (columns: number of slices)."""
    out = []
    keys = sorted({(r["method"], r["strategy"]) for r in rows},
                  key=lambda k: (METHODS.index(k[0]), STRATEGIES.index(k[1])))
    for method, strategy in keys:
        row: dict = {"method": method, "strategy": strategy}
        for n in range(1, n_max + 1):
            sel = [r["dice"] for r in rows if (r["method"], r["strategy"], r["n"])
                   == (method, strategy, n)]
            row[f"n{n}"] = float(np.mean(sel)) if sel else float("nan")
            row[f"c{n}"] = len(sel)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    args = parse_args(argv)
    out = start_run(args)
    data = Path(args.data or DATASETS[args.dataset][0])
    train_cases, cases = dataset_cases(args.dataset, data)
    if args.limit:
        cases = cases[: args.limit]
    model, _, _ = load_or_train(args, [c.image for c in train_cases],
                                out / f"annotation_curve_{args.dataset}_model")
    methods = [m for m in args.methods.split(",") if m]
    strategies = [s for s in args.strategies.split(",") if s]
    reg = set(args.registration_strategies.split(","))
    rows = []
    for ci, case in enumerate(cases):
        image, label = read_volume(case.image), read_label(case.label)
        values = ([int(v) for v in args.labels.split(",")] if args.labels
                  else [int(v) for v in np.unique(label.array) if v != 0])
        if args.dataset == "leftatrium":
            values = [0]  # the atrium: every non-zero voxel
        for value in values:
            mask = label.array > 0 if value == 0 else label.array == value
            if not mask.any():
                continue
            for r in structure_runs(model, image, mask, methods=methods,
                                    strategies=strategies, reg_strategies=reg,
                                    n_max=args.slices, criterion=args.criterion,
                                    fusion=args.fusion, seed=args.seed + ci,
                                    start_at=args.start,
                                    intensity_weight=args.intensity_weight,
                                    mark_ends=args.mark_ends,
                                    cross_check=args.cross_check):
                rows.append({"case": case.name, "structure": value or 1, **r})
                logging.info("%s %s %s %s n=%d [%s] dice=%.3f %.1fs", case.name, value or 1,
                             r["method"], r["strategy"], r["n"], r["slices"], r["dice"],
                             r["seconds"])
    stem = f"annotation_curve_{args.dataset}{args.tag}"
    csv_path = write_csv(out / f"{stem}.csv", rows)
    table = summary(rows, args.slices)
    columns = [("method", "method", ""), ("strategy", "next slices", "")]
    columns += [(f"n{n}", f"{n} slice{'s' if n > 1 else ''}", ".3f")
                for n in range(1, args.slices + 1)]
    print(f"\n{args.dataset}: mean Dice vs annotated slices ({len(cases)} cases, "
          f"fusion {args.fusion}, intensity weight {args.intensity_weight:g}, "
          f"suggest criterion {args.criterion}, suggest and random "
          f"start at the {args.start} slice"
          f"{'; the ends marked as empty slices' if args.mark_ends else ''}"
          f"{f'; suggest cross-checked by {args.cross_check}' if args.cross_check else ''})")
    print(format_table(table, columns))
    chart = _plot.line_chart(
        {f"{r['method']} {r['strategy']}": (list(range(1, args.slices + 1)),
                                             [r[f"n{n}"] for n in range(1, args.slices + 1)])
         for r in table},
        title=f"{args.dataset}: mean Dice vs annotated slices ({len(cases)} cases)",
        xlabel="annotated slices", ylabel="mean Dice", y_range=(0.0, 1.0))
    png = _plot.save(out / f"{stem}.png", chart)
    print(f"\nwrote {csv_path}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
