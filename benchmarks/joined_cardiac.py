"""OneSeg and LTUDA joined on Cardiac MRI: one annotated slice per volume and structure.

The workflow sparseseg exists for, measured end to end. The training patients are split into
three subsets as in ``benchmarks.ltuda_cardiac`` (right ventricle, myocardium, left ventricle);
in each subset a simulated annotator draws only the structure's largest slice of each volume
(taken from the true label), and OneSeg, trained self-supervised on the training images
(labels never read), propagates it through the volume. LTUDA (and the partial-label baseline)
then train one three-structure model on the propagated labels; the same runs on the true
partial labels show what the propagation costs. All runs are tested on the held-out patients'
full labels.

Writes to ``--out``: ``joined_cardiac_propagation.csv`` (per training volume: structure,
annotated slice, slices the true label covers, propagation Dice) and ``joined_cardiac.csv``
(per run: 3D Dice per structure on the test patients).

Usage (5 minutes of OneSeg training, then four 12-minute runs two at a time: about
32 minutes on 2 cores)::

    python -m benchmarks.joined_cardiac --oneseg-minutes 5 --minutes 12
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._ltuda_common import (
    RunGroup,
    dataset_folder,
    run_groups,
)
from benchmarks._oneseg_common import format_table, one_slice, slice_areas
from benchmarks._tables import write_csv
from benchmarks.ltuda_cardiac import (
    STRUCTURES,
    patient_of,
    patient_order,
    split_runs,
    structure_subsets,
)
from sparseseg.io import Case
from sparseseg.metrics import dice

RUNS = ("partial", "ltuda")
"""Methods trained on each kind of label."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/Cardiac", help="Cardiac dataset")
    parser.add_argument("--oneseg-minutes", type=float, default=5.0,
                        help="OneSeg training budget (on the training patients' images)")
    parser.add_argument("--oneseg-size", type=int, default=128, help="OneSeg slice size")
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="training budget of each LTUDA / baseline run")
    parser.add_argument("--labels", default="propagated,true",
                        help="label kinds among propagated,true (true: the real partial labels)")
    parser.add_argument("--test-patients", type=int, default=5)
    parser.add_argument("--train-patients", type=int, default=None,
                        help="use only this many training patients (quick checks)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--strong-views", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--work", default=None, help="keep models and datasets here")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.labels.split(",") if k.strip()]
    if not kinds or any(k not in ("propagated", "true") for k in kinds):
        parser.error(f"--labels takes propagated and/or true, got {args.labels!r}")
    args.kinds = kinds
    return args


def propagate_subset(model: object, folder: Path, cases: list[Case], value: int,
                     organ: str) -> list[dict]:
    """Annotate each case's largest ``value`` slice, propagate it, write a one-structure dataset.

    Returns one row per case: the annotated slice, the slices the true label covers, the
    propagation's 3D Dice against the true label and its seconds.
    """
    from sparseseg import oneseg
    from sparseseg.io import read_label, read_volume, write_volume

    dataset_folder(folder)
    rows = []
    for case in cases:
        image, label = read_volume(case.image), read_label(case.label)
        truth = label.array == value
        areas = slice_areas(truth)
        k = int(np.argmax(areas))
        start = time.monotonic()
        pred = oneseg.propagate(model=model, image=image,
                                annotation=one_slice(truth.astype(np.uint8), k),
                                device="cpu").array > 0
        seconds = time.monotonic() - start
        write_volume(folder / "imagesTr" / f"{case.name}_0000.nii.gz", image.array, image)
        write_volume(folder / "labelsTr" / f"{case.name}.nii.gz",
                     (pred * value).astype(np.uint8), label)
        rows.append({"case": case.name, "structure": organ, "slice": k,
                     "truth_slices": int((areas > 0).sum()),
                     "predicted_slices": int((slice_areas(pred) > 0).sum()),
                     "dice": dice(pred, truth), "seconds": seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    args = parse_args(argv)

    import torch

    from sparseseg import oneseg
    from sparseseg.io import find_cases
    from sparseseg.ltuda import DatasetSpec
    from sparseseg.oneseg.model import OneSegModel

    torch.set_num_threads(args.threads * args.jobs)  # OneSeg trains alone, on every core
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = find_cases(args.data, with_labels=True)
    order = patient_order(cases, args.seed)
    test_p, train_p = order[: args.test_patients], order[args.test_patients:]
    if args.train_patients:
        train_p = train_p[: args.train_patients]

    def of(names: list[str]) -> list[Case]:
        return [c for c in cases if patient_of(c) in names]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs: dict[str, tuple[list, str]] = {}
        if "propagated" in args.kinds:
            start = time.monotonic()
            oneseg.train(images=[c.image for c in of(train_p)], output=work / "oneseg_model",
                         max_time=args.oneseg_minutes, size=args.oneseg_size, seed=args.seed,
                         device="cpu", progress=False)
            oneseg_minutes = (time.monotonic() - start) / 60
            model = OneSegModel.load(work / "oneseg_model")
            prop_rows, specs = [], []
            subsets = zip(STRUCTURES.items(), structure_subsets(train_p), strict=True)
            for (organ, value), names in subsets:
                folder = work / f"propagated_{organ}"
                prop_rows += propagate_subset(model, folder, of(names), value, organ)
                specs.append(DatasetSpec(folder, {organ: [value]}))
            write_csv(out / "joined_cardiac_propagation.csv", prop_rows)
            print(f"OneSeg trained {oneseg_minutes:.1f} min on {len(of(train_p))} training "
                  "volumes (labels never read); one slice annotated per volume and structure:")
            print(format_table(propagation_summary(prop_rows), [
                ("structure", "structure", ""), ("volumes", "volumes", "d"),
                ("annotated", "slices annotated", "d"), ("labeled", "slices in true labels", "d"),
                ("dice", "propagation DICE", ".3f")]), flush=True)
            runs.update({f"{m}_propagated": (specs, m) for m in RUNS})
        if "true" in args.kinds:
            true_runs = split_runs(list(RUNS), of, train_p, work / "true", args)
            runs.update({f"{m}_true": run for m, run in true_runs.items()})
        print(f"training {len(runs)} runs of {args.minutes} min on {len(train_p)} patients, "
              f"testing on {len(test_p)}", flush=True)
        run_groups([RunGroup(runs, of(test_p), work, out / "joined_cardiac.csv")], STRUCTURES,
                   jobs=args.jobs, minutes=args.minutes, size=args.size,
                   base_channels=args.base_channels, seed=args.seed, loss="bce+dice",
                   strong_views=args.strong_views, threads=args.threads,
                   precision=args.precision)
    print(f"wrote {out / 'joined_cardiac.csv'}")
    return 0


def propagation_summary(rows: list[dict]) -> list[dict]:
    """Per structure (and over all): volumes, slices annotated, slices labeled, mean Dice."""
    table = []
    for organ in [*STRUCTURES, "all"]:
        sel = [r for r in rows if organ in ("all", r["structure"])]
        if not sel:
            continue
        table.append({"structure": organ, "volumes": len(sel), "annotated": len(sel),
                      "labeled": sum(r["truth_slices"] for r in sel),
                      "dice": float(np.mean([r["dice"] for r in sel]))})
    return table


if __name__ == "__main__":
    raise SystemExit(main())
