"""OneSeg against registration and copy on abdominal CT and MR (AbdomenTS), organ by organ.

OneSeg trains self-supervised on the AbdomenTS images themselves (labels are never read for
training: that is how OneSeg is used, on the very volumes one wants to label), within
``--max-time`` minutes, or ``--model`` reuses a model. Then, for each volume and each organ
separately, one slice of that organ is annotated from the label (the screened slice and the
middle of the volume, both organ-blind and so possibly missing the organ; the organ's
largest-area slice; the middle slice of its extent) and propagated with OneSeg, chained demons
registration and plain copy. Each result is scored against that organ's full label: DICE,
RAVD %, ASSD mm.

The labels are TotalSegmentator's output, not manual (see the dataset's ``dataset.json``).

Writes to ``--out``: ``oneseg_abdomen.csv`` (one row per volume, organ, start and method),
``oneseg_abdomen_dice.png`` (Dice per organ and method from the largest-area slice) and
``oneseg_abdomen_CASE.png`` (each volume: image, labels, each method's organs combined).

Run from the repository root::

    python -m benchmarks.oneseg_abdomen --max-time 5
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
    load_or_train,
    mean_table,
    one_slice,
    organ_starts,
    propagate,
    start_run,
)
from benchmarks._tables import write_csv
from sparseseg import oneseg
from sparseseg.io import find_cases, read_label, read_volume
from sparseseg.io.dataset import read_dataset_json
from sparseseg.metrics import chaos_metrics
from sparseseg.viz import preview_slices, side_by_side, write_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/AbdomenTS")
    add_training_options(parser, max_time=5.0)
    parser.add_argument("--model", default=None, help="reuse this model folder (skip training)")
    parser.add_argument("--methods", default="oneseg,registration,copy")
    parser.add_argument("--starts", default=",".join(START_NAMES),
                        help="start slices among " + ",".join(START_NAMES))
    parser.add_argument("--no-anchor", dest="anchor", action="store_false",
                        help="OneSeg copies from the last propagated slice only (the paper)")
    parser.add_argument("--organs", default=None, help="label values to score (default: all)")
    parser.add_argument("--cases", default=None, help="case names to score (default: all)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def modality(case_name: str) -> str:
    """``ts_ct`` -> ``CT``: the modality is the case name's last part."""
    return case_name.rsplit("_", 1)[-1].upper()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    args = parse_args(argv)
    out = start_run(args)
    data = Path(args.data)
    labels = read_dataset_json(data).get("labels", {})
    names = {int(v): k for k, v in labels.items() if int(v) > 0}
    cases = find_cases(data, with_labels=True)
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
    # Self-supervised on the images to be labelled; labels are not read for training.
    model, model_dir, train_seconds = load_or_train(args, [c.image for c in cases],
                                                    out / "oneseg_abdomen_model")
    methods = [m for m in args.methods.split(",") if m]
    starts_wanted = [s for s in args.starts.split(",") if s]
    organs = [int(v) for v in args.organs.split(",")] if args.organs else sorted(names)
    rows = []
    for case in cases:
        image, label = read_volume(case.image), read_label(case.label)
        # Organ-blind starts are one slice per volume, shared by all organs.
        blind = {"screened": oneseg.select(model=model, image=image, device="cpu"),
                 "volume_middle": oneseg.select(model=model, image=image, criterion="middle",
                                                device="cpu")}
        combined = {m: np.zeros(label.shape, np.uint8) for m in methods}
        for value in organs:
            mask = label.array == value
            if not mask.any():
                logging.warning("%s: organ %s absent, skipped", case.name, value)
                continue
            starts = {**organ_starts(mask), **blind}
            for start_name in starts_wanted:
                k = starts[start_name]
                ann = one_slice(mask.astype(np.uint8) * value, k)
                for method in methods:
                    pred, seconds = propagate(model, image, ann, method, anchor=args.anchor)
                    m = chaos_metrics(pred == value, mask, spacing=label.spacing)
                    rows.append({
                        "case": case.name, "modality": modality(case.name), "organ_value": value,
                        "organ": names.get(value, str(value)), "start": start_name, "slice": k,
                        "annotated_voxels": int(ann.astype(bool).sum()), "method": method,
                        "dice": m["dice"], "ravd": m["ravd"], "assd": m["assd"],
                        "seconds": seconds,
                    })
                    if start_name == "largest":
                        combined[method][pred == value] = value
                    logging.info("%s %s %s(k=%d) %s dice=%.3f %.1fs", case.name,
                                 names.get(value, value), start_name, k, method, m["dice"],
                                 seconds)
        if "largest" in starts_wanted:
            shown = np.where(np.isin(label.array, organs), label.array, 0)
            figure = side_by_side(
                {"truth": shown, **combined}, slices=preview_slices(shown, 3),
                image=image.array, spacing=image.spacing, reference="truth", names=names,
                orthogonal=True, direction=image.direction,
                title=f"AbdomenTS {case.name} ({modality(case.name)}): each organ propagated "
                      "from its largest-area slice (white: truth outline)")
            write_png(out / f"oneseg_abdomen_{case.name}.png", figure)
    write_csv(out / "oneseg_abdomen.csv", rows)
    print(f"\nAbdomenTS: {len(cases)} volumes, organs {organs}, training "
          f"{train_seconds / 60:.1f} min on their images, model {model_dir}")
    missed = [r for r in rows if r["annotated_voxels"] == 0 and r["method"] == methods[0]]
    if missed:
        print(f"screened slice misses the organ in {len(missed)} of "
              f"{len([r for r in rows if r['start'] == 'screened' and r['method'] == methods[0]])}"
              " (volume, organ) pairs: nothing to propagate, scored as an empty result")
    print("\nMean over organs")
    print(format_table(mean_table(rows, ("modality", "start", "method")),
                       [("modality", "modality", ""), ("start", "start", ""),
                        ("method", "method", ""), *METRIC_COLUMNS, ("seconds", "s/organ", ".2f"),
                        ("n", "organs", "d")]))
    for start_name in starts_wanted:
        print(f"\nDICE per organ, from the {start_name} slice")
        table = []
        for mod in dict.fromkeys(r["modality"] for r in rows):
            for organ in dict.fromkeys(r["organ"] for r in rows if r["modality"] == mod):
                row = {"modality": mod, "organ": organ}
                for method in methods:
                    sel = [r for r in rows if r["modality"] == mod and r["organ"] == organ
                           and r["start"] == start_name and r["method"] == method]
                    row[method] = sel[0]["dice"] if sel else float("nan")
                table.append(row)
        print(format_table(table, [("modality", "modality", ""), ("organ", "organ", ""),
                                   *[(m, m, ".3f") for m in methods]]))
        if start_name == "largest":
            chart = _plot.bar_chart(
                [f"{r['modality']} {r['organ']}" for r in table],
                {m: [r[m] for r in table] for m in methods},
                title="AbdomenTS: Dice per organ, one slice (largest area) propagated",
                ylabel="DICE", y_range=(0.0, 1.0))
            _plot.save(out / "oneseg_abdomen_dice.png", chart)
    print(f"\nwrote {out / 'oneseg_abdomen.csv'} and PNGs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
