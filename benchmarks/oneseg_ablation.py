"""Ablation of OneSeg's parts on LeftAtrium, like the paper's Table 3.

Variants, each trained from scratch for the same ``--max-time`` minutes on the same LeftAtrium
training images (labels never read) as ``oneseg_leftatrium``:

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
reuses them instead of training).

Run from the repository root (5 variants x 4 minutes plus evaluation: about 25 minutes on
2 cores)::

    python -m benchmarks.oneseg_ablation --max-time 4
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from benchmarks import _plot
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
    write_csv,
)
from sparseseg.io import read_label, read_volume
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
    add_training_options(parser, max_time=4.0)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated among {','.join(VARIANTS)}")
    parser.add_argument("--models", default=None,
                        help="reuse the models in DIR/VARIANT instead of training")
    parser.add_argument("--limit", type=int, default=None, help="at most this many val cases")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the ablation; return 0."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_cases, val_cases = leftatrium_split(args.data, args.train, args.limit)
    variants = args.variants.split(",")
    models: dict[str, OneSegModel] = {}
    minutes: dict[str, float] = {}
    steps = args.epochs * max(1, args.pairs_per_epoch // 8)
    budget = (f"{args.max_time:g} min" if args.max_time
              else f"{steps} steps ({args.epochs} epochs)")
    for name in variants:
        if args.models:
            models[name], minutes[name] = OneSegModel.load(Path(args.models) / name), 0.0
            continue
        logging.info("training %s (%s): %s", name, VARIANTS[name] or "OneSeg", budget)
        model, seconds = train_model([c.image for c in train_cases],
                                     out / "oneseg_ablation_models" / name, args,
                                     **VARIANTS[name])
        models[name], minutes[name] = model, seconds / 60
    rows = []
    for case in val_cases:
        image, label = read_volume(case.image), read_label(case.label)
        truth = label.array > 0
        for name, model in models.items():
            for start_name, k in start_slices(model, image, truth, STARTS).items():
                pred, seconds = propagate(model, image, one_slice(truth.astype(np.uint8), k),
                                          "oneseg")
                m = chaos_metrics(pred > 0, truth, spacing=label.spacing)
                rows.append({"variant": name, "case": case.name, "start": start_name, "slice": k,
                             "dice": m["dice"], "ravd": m["ravd"], "assd": m["assd"],
                             "seconds": seconds, "train_min": minutes[name]})
                logging.info("%s %s %s(k=%d) dice=%.3f", name, case.name, start_name, k,
                             m["dice"])
    write_csv(out / "oneseg_ablation.csv", rows)
    print(f"\nOneSeg ablation on LeftAtrium: {len(train_cases)} training images, "
          f"{len(val_cases)} validation cases, {budget} of training per variant")
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
