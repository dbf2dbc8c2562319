"""LTUDA on generated abdomen phantoms split into four single-organ datasets (the paper's toy set).

Four datasets keep only the liver, spleen, kidney or pancreas label. Each comes from its own
"scanner": every organ's mean HU is shifted by that dataset's offset (``--shifts``), so an
organ's intensity in one dataset is another organ's in the next, the setting where a model
trained on partial labels calls organs by the wrong name. Held-out phantoms with all labels,
the same number from each dataset's contrast, are the test set. Runs ``partial``, ``cda``,
``ltuda`` and ``full`` within a time budget and prints Dice per organ plus ``confusion``: the
fraction of organ voxels predicted as another organ (:func:`sparseseg.metrics.organ_confusion`).

Usage:
    python -m benchmarks.ltuda_phantom --minutes 5 --jobs 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from benchmarks._ltuda_common import run_methods, write_subset

BASE_HU = {"liver": 70.0, "spleen": 125.0, "kidney": 190.0, "pancreas": 25.0}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--methods", default="partial,cda,ltuda,full")
    parser.add_argument("--train-cases", type=int, default=3, help="per dataset")
    parser.add_argument("--test-cases", type=int, default=1, help="per dataset's contrast")
    parser.add_argument("--shifts", default="0,55,-45,100",
                        help="HU offset of each dataset's organs (four values; 0,0,0,0: one site)")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 24))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--loss", default="bce+dice", choices=("bce", "bce+dice"))
    parser.add_argument("--strong-views", type=int, default=2)
    parser.add_argument("--ema", type=float, default=0.999,
                        help="mean teacher's final EMA decay in cda/ltuda (paper: 0.999)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="training arithmetic (auto: bf16 on CPUs with AMX)")
    parser.add_argument("--no-tone-augmentation", dest="tone", action="store_false",
                        help="train without the weak view's gamma/contrast (the paper's "
                        "augmentation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (1 thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--csv", default="benchmarks/results/ltuda_phantom.csv")
    parser.add_argument("--work", default=None, help="keep datasets and models here")
    args = parser.parse_args(argv)
    shifts = [float(v) for v in args.shifts.split(",")]
    if len(shifts) != 4:
        parser.error("--shifts needs four values, one per dataset")

    from sparseseg.data import PHANTOM_LABELS, make_phantom_dataset
    from sparseseg.io import find_cases
    from sparseseg.ltuda import DatasetSpec

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        specs, full_cases, test = [], [], []
        for i, (organ, value) in enumerate(PHANTOM_LABELS.items()):
            hu = {o: h + shifts[i] for o, h in BASE_HU.items()}
            source = make_phantom_dataset(work / f"source_{organ}",
                                          n_cases=args.train_cases + args.test_cases,
                                          shape=tuple(args.shape), seed=args.seed + 1000 * i,
                                          organ_hu=hu)
            cases = find_cases(source, with_labels=True)
            train, held_out = cases[: args.train_cases], cases[args.train_cases:]
            folder = write_subset(work / f"partial_{organ}", train, [value])
            specs.append(DatasetSpec(folder, {organ: [value]}))
            full_cases += train
            test += held_out
        full = [DatasetSpec(write_subset(work / "full", full_cases, None),
                            {o: [v] for o, v in PHANTOM_LABELS.items()})]
        catalogue = {"partial": (specs, "partial"), "cda": (specs, "cda"),
                     "ltuda": (specs, "ltuda"), "full": (full, "partial")}
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        if any(m not in catalogue for m in wanted):
            parser.error(f"runs must be among {list(catalogue)}")
        run_methods({m: catalogue[m] for m in wanted}, test, dict(PHANTOM_LABELS), work,
                    minutes=args.minutes, size=args.size, base_channels=args.base_channels,
                    seed=args.seed, csv_path=Path(args.csv), loss=args.loss,
                    components={"kidney": 2}, strong_views=args.strong_views,
                    jobs=args.jobs, threads=args.threads, ema=args.ema,
                    precision=args.precision, tone=args.tone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
