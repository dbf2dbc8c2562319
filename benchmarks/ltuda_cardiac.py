"""LTUDA on ACDC cardiac MRI split into three single-structure datasets.

Patients (not frames) are split into training and held-out test patients. The training
patients are split again into three partial datasets: one keeps only the right ventricle's
label, one only the myocardium's, one only the left ventricle's (the other structures are
zeroed, i.e. unknown). Runs: ``partial`` (baseline), ``cda`` (optional), ``ltuda``, and ``full``
(same training patients, all labels). Each run trains within a time budget; the table gives the
3D Dice per structure on the test patients with full labels.

Writes to ``--out``: ``ltuda_cardiac.csv`` (the table) and ``ltuda_cardiac.png`` (one test slice:
image, truth and each run's prediction side by side).

Usage (four 13-minute runs, two at a time with one thread each: about 30 minutes on 2 cores)::

    python -m benchmarks.ltuda_cardiac --minutes 13 --strong-views 1
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._ltuda_common import run_methods, write_subset
from sparseseg.io import Case

STRUCTURES = {"right_ventricle": 1, "myocardium": 2, "left_ventricle": 3}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/Cardiac", help="Cardiac dataset")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per run")
    parser.add_argument("--methods", default="partial,cda,ltuda,full",
                        help="comma-separated runs among partial,cda,ltuda,full")
    parser.add_argument("--test-patients", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", default="bce+dice", choices=("bce", "bce+dice"),
                        help="supervised loss (bce: the paper's; default bce+dice)")
    parser.add_argument("--strong-views", type=int, default=2,
                        help="strong CutMix views per batch in cda/ltuda (paper: 2)")
    parser.add_argument("--ema", type=float, default=0.999,
                        help="mean teacher's final EMA decay in cda/ltuda (paper: 0.999)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="training arithmetic (auto: bf16 on CPUs with AMX)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs trained at once, each in its own process (default 2: two "
                        "1-thread runs side by side on 2 cores)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for CSV and PNG")
    parser.add_argument("--csv", default=None, help="output table (default: OUT/ltuda_cardiac.csv)")
    parser.add_argument("--work", default=None, help="keep models here (default: temp)")
    args = parser.parse_args(argv)

    import torch

    from sparseseg.io import find_cases
    from sparseseg.ltuda import DatasetSpec

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = Path(args.csv) if args.csv else out / "ltuda_cardiac.csv"
    cases = find_cases(args.data, with_labels=True)
    patients = sorted({re.sub(r"_frame\d+$", "", c.name) for c in cases})
    rng = np.random.default_rng(args.seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    test_p, train_p = order[: args.test_patients], order[args.test_patients:]
    groups = [train_p[i::3] for i in range(3)]

    def of(names: list[str]) -> list:
        return [c for c in cases if re.sub(r"_frame\d+$", "", c.name) in names]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        partial_specs = []
        for (organ, value), names in zip(STRUCTURES.items(), groups, strict=True):
            folder = write_subset(work / f"partial_{organ}", of(names), [value])
            partial_specs.append(DatasetSpec(folder, {organ: [value]}))
        full = write_subset(work / "full", of(train_p), None)
        full_spec = [DatasetSpec(full, {o: [v] for o, v in STRUCTURES.items()})]
        catalogue = {
            "partial": (partial_specs, "partial"),
            "cda": (partial_specs, "cda"),
            "ltuda": (partial_specs, "ltuda"),
            "full": (full_spec, "partial"),
        }
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in catalogue]
        if unknown:
            parser.error(f"unknown run(s): {unknown}")
        print(f"train patients {len(train_p)} ({[len(g) for g in groups]} per subset), "
              f"test patients {len(test_p)}, {args.minutes} min per run", flush=True)
        test = of(test_p)
        run_methods({m: catalogue[m] for m in wanted}, test, STRUCTURES, work,
                    minutes=args.minutes, size=args.size, base_channels=args.base_channels,
                    seed=args.seed, csv_path=csv_path, loss=args.loss,
                    strong_views=args.strong_views, jobs=args.jobs, threads=args.threads,
                    ema=args.ema, precision=args.precision)
        png = prediction_figure(out / "ltuda_cardiac.png", test[0], wanted, work)
    print(f"wrote {csv_path} and {png}")
    return 0


def prediction_figure(path: Path, case: Case, runs: list[str], work: Path) -> Path:
    """Image, truth and each run's prediction on the test case's slice of largest truth area."""
    import json

    from sparseseg.io import read_label, read_volume
    from sparseseg.viz import side_by_side, write_png

    image, truth = read_volume(case.image), read_label(case.label)
    columns = {"truth": truth.array}
    for run in runs:
        organs = json.loads((work / f"model_{run}" / "config.json").read_text())["organs"]
        pred = read_label(work / f"pred_{run}" / f"{case.name}.nii.gz").array
        mapped = np.zeros_like(truth.array)
        for k, organ in enumerate(organs):  # prediction k + 1 is organs[k]
            mapped[pred == k + 1] = STRUCTURES[organ]
        columns[run] = mapped
    k = int(np.argmax((truth.array > 0).sum(axis=(0, 1))))
    figure = side_by_side(
        columns, slices=[k], image=image.array, spacing=image.spacing, reference="truth",
        names={v: o.replace("_", " ") for o, v in STRUCTURES.items()},
        captions={k: f"test case {case.name}, slice of largest truth area"},
        title="LTUDA on Cardiac: partial-label runs against full labels (white: truth outline)",
        direction=image.direction, panel_px=220)
    return write_png(path, figure)


if __name__ == "__main__":
    raise SystemExit(main())
