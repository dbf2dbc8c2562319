"""Ablation of OneSeg's parts on LeftAtrium, like the paper's Table 3.

Variants, each trained from scratch for the same number of steps (default: 3 epochs of 70
steps, learning rate halved after each; ``--max-time`` gives each the same minutes instead) on
the same LeftAtrium training images (labels never read) as ``oneseg_leftatrium``:

* ``full``: OneSeg as sparseseg trains it (the paper's method plus neighbour chains);
* ``no_local_chains``: the paper's training pairs only (no neighbour chains);
* ``no_gabor``: without the Gabor information bottleneck (``bottleneck=intensity``);
* ``no_scheduled_sampling``: without scheduled sampling;
* ``no_cycle``: without cycle consistency;
* ``random_pairs``: random training pairs instead of the screening module's.

Each model propagates one annotated slice of every validation case, from the largest-area slice
and from the slice its own screening picks, and is scored against the full label (DICE, RAVD %,
ASSD mm). Writes ``oneseg_ablation.csv`` and ``oneseg_ablation.png`` (a bar chart of Dice) to
``--out``; the models go to ``--out``/``oneseg_ablation_models/VARIANT`` (``--models DIR``
reuses them instead of training). ``--jobs 2`` (default) runs two variants at a time, each in
its own process with one thread.

Run from the repository root (6 variants x 210 steps plus evaluation, two at a time: about
25 minutes on 2 cores)::

    python -m benchmarks.oneseg_ablation
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import _plot
from benchmarks._jobs import run_jobs
from benchmarks._oneseg_common import (
    METRIC_COLUMNS,
    add_training_options,
    format_table,
    leftatrium_split,
    mean_table,
    one_slice,
    propagate,
    start_slices,
    train_model,
)
from benchmarks._tables import write_csv
from sparseseg.io import Case, read_label, read_volume
from sparseseg.metrics import chaos_metrics
from sparseseg.oneseg.model import OneSegModel

VARIANTS: dict[str, dict[str, object]] = {
    "full": {},
    "no_local_chains": {"local_chains": 0},
    "no_gabor": {"bottleneck": "intensity"},
    "no_scheduled_sampling": {"scheduled_sampling": False},
    "no_cycle": {"cycle": False},
    "random_pairs": {"pairs": "random"},
}
"""Variant name -> settings that differ from OneSeg's (see ``_oneseg_common.train_model``)."""

STARTS = ("largest", "screened")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/LeftAtrium")
    parser.add_argument("--train", type=int, default=30, help="cases used for training")
    add_training_options(parser, max_time=0.0, epochs=3, pairs_per_epoch=560)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated among {','.join(VARIANTS)}")
    parser.add_argument("--models", default=None,
                        help="reuse the models in DIR/VARIANT instead of training")
    parser.add_argument("--limit", type=int, default=None, help="at most this many val cases")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    parser.add_argument("--jobs", type=int, default=2,
                        help="variants trained and scored at once, each in its own process")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
    return args


def run_variant(name: str, args: argparse.Namespace, train_images: list[Path],
                val_cases: list[Case], out: Path, threads: int) -> tuple[list[dict], float]:
    """Train (or load) one variant and score it on the validation cases.

    Returns:
        ``(rows, training minutes)``; runs in a worker process when ``--jobs`` > 1.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # a worker's own log
    torch.set_num_threads(threads)
    if args.models:
        model, minutes = OneSegModel.load(Path(args.models) / name), 0.0
    else:
        logging.info("training %s (%s)", name, VARIANTS[name] or "OneSeg")
        model, seconds = train_model(train_images, out / "oneseg_ablation_models" / name, args,
                                     **VARIANTS[name])
        minutes = seconds / 60
    rows = []
    for case in val_cases:
        image, label = read_volume(case.image), read_label(case.label)
        truth = label.array > 0
        for start_name, k in start_slices(model, image, truth, STARTS).items():
            pred, seconds = propagate(model, image, one_slice(truth.astype(np.uint8), k),
                                      "oneseg")
            m = chaos_metrics(pred > 0, truth, spacing=label.spacing)
            rows.append({"variant": name, "case": case.name, "start": start_name, "slice": k,
                         "dice": m["dice"], "ravd": m["ravd"], "assd": m["assd"],
                         "seconds": seconds, "train_min": minutes})
            logging.info("%s %s %s(k=%d) dice=%.3f", name, case.name, start_name, k,
                         m["dice"])
    return rows, minutes


def main(argv: list[str] | None = None) -> int:
    """Run the ablation; return 0."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_cases, val_cases = leftatrium_split(args.data, args.train, args.limit)
    train_images = [c.image for c in train_cases]
    variants = args.variants.split(",")
    steps = args.epochs * max(1, args.pairs_per_epoch // 8)
    budget = (f"{args.max_time:g} min" if args.max_time
              else f"{steps} steps ({args.epochs} epochs)")
    logging.info("%d variants, %s each, %d at a time with %d thread(s) each", len(variants),
                 budget, min(args.jobs, len(variants)), args.threads)
    started = time.monotonic()
    results = run_jobs(run_variant, [((name, args, train_images, val_cases, out, args.threads),
                                      {}) for name in variants], args.jobs)
    rows = [row for variant_rows, _ in results for row in variant_rows]
    write_csv(out / "oneseg_ablation.csv", rows)
    print(f"\nOneSeg ablation on LeftAtrium: {len(train_cases)} training images, "
          f"{len(val_cases)} validation cases, {budget} of training per variant, "
          f"{(time.monotonic() - started) / 60:.1f} min in all")
    table = mean_table(rows, ("variant", "start"), metrics=("dice", "ravd", "assd", "train_min"))
    print(format_table(table, [("variant", "variant", ""), ("start", "start", ""),
                               *METRIC_COLUMNS, ("train_min", "train min", ".1f")]))
    by = {(r["variant"], r["start"]): r["dice"] for r in table}
    chart = _plot.bar_chart(
        variants, {s: [by.get((v, s), float("nan")) for v in variants] for s in STARTS},
        title=f"OneSeg ablation, LeftAtrium ({len(val_cases)} cases, {budget} each)",
        ylabel="mean DICE", y_range=(0.0, 1.0))
    _plot.save(out / "oneseg_ablation.png", chart)
    print(f"\nwrote {out / 'oneseg_ablation.csv'} and {out / 'oneseg_ablation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
