"""OneSeg on real LGE-MRI: train on LeftAtrium images, propagate one slice on held-out cases.

Trains OneSeg self-supervised on the images of the first ``--train`` cases (labels never read),
then, for each held-out case, annotates one slice from its label (the screened slice, the slice
with the largest atrium area, and the middle slice of the atrium's extent), propagates it with
OneSeg and with the training-free baselines (chained demons registration, plain copy), and
scores the result against the full label (DICE, RAVD %, ASSD mm).

Writes to ``--out``:

* ``oneseg_leftatrium.csv``: one row per case, start slice and method;
* ``error_vs_distance.csv``: the 2D Dice of every slice against its signed distance from the
  annotated slice (all starts), and ``error_vs_distance.png``: mean slice Dice per distance bin,
  one curve per method, from the largest-area slice (how errors accumulate along the chain);
* ``oneseg_leftatrium_case.png``: one validation case, image, truth and each method's result.

Run from the repository root::

    python -m benchmarks.oneseg_leftatrium --max-time 15
    python -m benchmarks.oneseg_leftatrium --model benchmarks/results/oneseg_leftatrium_model
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from benchmarks import _plot
from benchmarks._oneseg_common import (
    METRIC_COLUMNS,
    START_NAMES,
    add_training_options,
    format_table,
    leftatrium_split,
    load_or_train,
    mean_by_distance,
    mean_table,
    one_slice,
    propagate,
    slice_areas,
    slice_dice_by_distance,
    start_run,
    start_slices,
)
from benchmarks._tables import write_csv
from sparseseg.io import Volume, read_label, read_volume
from sparseseg.metrics import chaos_metrics
from sparseseg.viz import side_by_side, write_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/LeftAtrium")
    parser.add_argument("--train", type=int, default=30, help="cases used for training")
    add_training_options(parser, max_time=15.0)
    parser.add_argument("--model", default=None, help="reuse this model folder (skip training)")
    parser.add_argument("--methods", default="oneseg,registration,copy")
    parser.add_argument("--starts", default=",".join(START_NAMES),
                        help="start slices among " + ",".join(START_NAMES))
    parser.add_argument("--verify", action="store_true", help="per-step verification for all")
    parser.add_argument("--no-anchor", dest="anchor", action="store_false",
                        help="OneSeg copies from the last propagated slice only (the paper)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many val cases")
    parser.add_argument("--bin", type=int, default=4,
                        help="width in slices of the distance bins of error_vs_distance.png")
    parser.add_argument("--figure-case", type=int, default=0,
                        help="validation case (index) drawn in oneseg_leftatrium_case.png")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def case_figure(path: Path, image: Volume, truth: np.ndarray, preds: dict[str, np.ndarray],
                k0: int, title: str) -> None:
    """Truth and each method's result on the annotated slice and two slices either side."""
    present = np.nonzero(slice_areas(truth))[0]
    lo, hi = int(present[0]), int(present[-1])
    far_lo = int(round(lo + 0.15 * (hi - lo)))
    far_hi = int(round(hi - 0.15 * (hi - lo)))
    slices = sorted({far_lo, k0, far_hi})
    captions = {k: f"{k - k0:+d} slices from the annotated one" for k in slices}
    captions[k0] = "annotated slice (largest area)"
    figure = side_by_side({"truth": truth.astype(np.uint8), **preds}, slices=slices,
                          image=image.array, spacing=image.spacing, reference="truth",
                          names={1: "left atrium"}, orthogonal=True, captions=captions,
                          title=title, direction=image.direction)
    write_png(path, figure)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    args = parse_args(argv)
    out = start_run(args)
    train_cases, val_cases = leftatrium_split(args.data, args.train, args.limit)
    model, model_dir, train_seconds = load_or_train(args, [c.image for c in train_cases],
                                                    out / "oneseg_leftatrium_model")
    methods = [m for m in args.methods.split(",") if m]
    starts_wanted = [s for s in args.starts.split(",") if s]
    rows, slice_rows = [], []
    for ci, case in enumerate(val_cases):
        image, label = read_volume(case.image), read_label(case.label)
        truth = label.array > 0
        starts = start_slices(model, image, truth, starts_wanted)
        figure_preds: dict[str, np.ndarray] = {}
        for start_name, k in starts.items():
            ann = one_slice(truth.astype(np.uint8), k)
            for method in methods:
                pred, seconds = propagate(model, image, ann, method, args.verify, args.anchor)
                m = chaos_metrics(pred > 0, truth, spacing=label.spacing)
                rows.append({"case": case.name, "start": start_name, "slice": k,
                             "method": method, "dice": m["dice"], "ravd": m["ravd"],
                             "assd": m["assd"], "seconds": seconds})
                for r in slice_dice_by_distance(pred > 0, truth, k):
                    slice_rows.append({"case": case.name, "start": start_name,
                                       "method": method, **r})
                if ci == args.figure_case and start_name == "largest":
                    figure_preds[method] = pred
                logging.info("%s %s(k=%d) %s dice=%.3f %.1fs", case.name, start_name, k,
                             method, m["dice"], seconds)
        if figure_preds:
            case_figure(out / "oneseg_leftatrium_case.png", image, truth, figure_preds,
                        starts["largest"], f"LeftAtrium {case.name}: propagated from the "
                        f"largest-area slice k={starts['largest']} (white: truth outline)")
    write_csv(out / "oneseg_leftatrium.csv", rows)
    write_csv(out / "error_vs_distance.csv", slice_rows)
    print(f"\nLeftAtrium: {len(train_cases)} training images, {len(val_cases)} validation "
          f"cases, training {train_seconds / 60:.1f} min, model {model_dir}")
    table = mean_table(rows, ("start", "method"))
    print(format_table(table, [("start", "start", ""), ("method", "method", ""),
                               *METRIC_COLUMNS, ("seconds", "s/vol", ".2f")]))
    if "largest" in starts_wanted:
        curves = mean_by_distance([r for r in slice_rows if r["start"] == "largest"],
                                  bin_width=args.bin, methods=methods)
        print(f"\nMean slice Dice by |distance| from the largest-area slice (bins of {args.bin} "
              "slices; n = slices over all cases)")
        bins = sorted({x for xs, _, _ in curves.values() for x in xs})
        table = []
        for b in bins:
            row = {"bin": f"{int(b)}-{int(b) + args.bin - 1}"}
            for method, (xs, ys, ns) in curves.items():
                row[method] = f"{ys[xs.index(b)]:.3f} (n={ns[xs.index(b)]})" if b in xs else "-"
            table.append(row)
        print(format_table(table, [("bin", "|distance|", ""),
                                   *[(m, m, "") for m in methods]]))
        chart = _plot.line_chart(
            {m: ([x + (args.bin - 1) / 2 for x in xs], ys) for m, (xs, ys, _) in curves.items()},
            title=f"LeftAtrium: slice Dice vs distance from the annotated (largest-area) slice, "
                  f"{len(val_cases)} cases",
            xlabel="|distance| from the annotated slice (slices)", ylabel="mean slice Dice",
            y_range=(0.0, 1.0))
        _plot.save(out / "error_vs_distance.png", chart)
    print(f"\nwrote {out / 'oneseg_leftatrium.csv'}, {out / 'error_vs_distance.csv'}, "
          f"{out / 'error_vs_distance.png'}, {out / 'oneseg_leftatrium_case.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
