"""LTUDA on generated abdomen phantoms split into four single-organ datasets (the paper's toy set).

Training phantoms are split into four datasets that keep only the liver, spleen, kidney or
pancreas label; held-out phantoms with all labels are the test set. Runs ``partial``, ``cda``
(optional), ``ltuda`` and ``full`` within a time budget and prints Dice per organ.

Usage:
    python -m benchmarks.ltuda_phantom --minutes 5 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from benchmarks._ltuda_common import run_methods, write_subset


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--methods", default="partial,ltuda,full")
    parser.add_argument("--train-cases", type=int, default=8, help="divisible by 4")
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 24))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--loss", default="bce+dice", choices=("bce", "bce+dice"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", default="benchmarks/results/ltuda_phantom.csv")
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)

    import torch

    from sparseseg.data import PHANTOM_LABELS, make_phantom_dataset
    from sparseseg.io import find_cases
    from sparseseg.ltuda import DatasetSpec

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        source = make_phantom_dataset(work / "source", n_cases=args.train_cases + args.test_cases,
                                      shape=tuple(args.shape), seed=args.seed)
        cases = find_cases(source, with_labels=True)
        train, test = cases[: args.train_cases], cases[args.train_cases:]
        specs = []
        for i, (organ, value) in enumerate(PHANTOM_LABELS.items()):
            folder = write_subset(work / f"partial_{organ}", train[i::4], [value])
            specs.append(DatasetSpec(folder, {organ: [value]}))
        full = [DatasetSpec(write_subset(work / "full", train, None),
                            {o: [v] for o, v in PHANTOM_LABELS.items()})]
        catalogue = {"partial": (specs, "partial"), "cda": (specs, "cda"),
                     "ltuda": (specs, "ltuda"), "full": (full, "partial")}
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        if any(m not in catalogue for m in wanted):
            parser.error(f"runs must be among {list(catalogue)}")
        run_methods({m: catalogue[m] for m in wanted}, test, dict(PHANTOM_LABELS), work,
                    minutes=args.minutes, size=args.size, base_channels=args.base_channels,
                    seed=args.seed, csv_path=Path(args.csv), loss=args.loss,
                    components={"kidney": 2})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
