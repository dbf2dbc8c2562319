"""Pool several LTUDA cross-validations (e.g. two patient splits) into one paired comparison.

Each ``ltuda_cardiac --folds K`` run writes ``ltuda_cardiac_folds.csv`` (one row per fold and
run). One cross-validation of four folds of five test patients cannot tell a 0.02 difference
in mean Dice from the spread of one run between repeats (up to 0.05 on one fold). Repeating the
cross-validation on other patient splits (``--seed``) and pooling the folds can: this script
pairs every fold's run with that fold's ``partial`` run and prints, per run, the number of
paired folds, the mean difference, its standard deviation, a 95 % t interval, and in how many
folds the run was ahead::

    python -m benchmarks.ltuda_pool seed0/ltuda_cardiac_folds.csv seed1/ltuda_cardiac_folds.csv

Folds are told apart by file and ``fold`` column, so two files' fold 0 are two folds. Files
of the same patient split (the same ``--seed``, other runs) are joined with ``--splits``, one
label per file: ``--splits 0,1,1`` pairs the second and third files' folds with each other.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Paired:
    """One run's paired comparison against a reference run over pooled folds.

    Attributes:
        run: The run's name.
        folds: Folds where both the run and the reference ran.
        mean: The run's mean Dice over those folds.
        diff: Mean of the per-fold differences (run minus reference).
        sd: Sample standard deviation of the differences (NaN for a single fold).
        low: Lower end of the two-sided 95 % t interval of ``diff`` (NaN for a single fold).
        high: Upper end of it.
        ahead: Folds in which the run scored above the reference.
    """

    run: str
    folds: int
    mean: float
    diff: float
    sd: float
    low: float
    high: float
    ahead: int


def read_folds(paths: Sequence[Path],
               splits: Sequence[str] | None = None) -> dict[tuple[str, str], dict[str, float]]:
    """``(split, fold) -> {run: mean Dice}`` from ``ltuda_cardiac_folds.csv`` files.

    Args:
        paths: The files.
        splits: A patient-split label per file (default: each file its own split).

    Raises:
        ValueError: A file lacks the ``fold``, ``run`` or ``mean`` column, or ``splits`` does
            not give one label per file (the message names the file or the counts).
    """
    if splits is None:
        splits = [str(i) for i in range(len(paths))]
    if len(splits) != len(paths):
        raise ValueError(f"{len(splits)} split labels for {len(paths)} files")
    folds: dict[tuple[str, str], dict[str, float]] = {}
    for i, path in zip(splits, paths, strict=True):
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"fold", "run", "mean"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: no column(s) {', '.join(sorted(missing))}")
            for row in reader:
                folds.setdefault((i, row["fold"]), {})[row["run"]] = float(row["mean"])
    return folds


def paired(folds: dict[tuple[str, str], dict[str, float]], run: str,
           reference: str = "partial") -> Paired:
    """``run`` against ``reference`` over the folds holding both (see :class:`Paired`)."""
    from scipy import stats

    both = [f for f in sorted(folds) if run in folds[f] and reference in folds[f]]
    if not both:
        raise ValueError(f"no fold holds both {run!r} and {reference!r}")
    scores = np.array([folds[f][run] for f in both])
    diff = scores - np.array([folds[f][reference] for f in both])
    n = len(diff)
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return Paired(run=run, folds=n, mean=float(scores.mean()), diff=float(diff.mean()), sd=sd,
                  low=float(diff.mean()) - half, high=float(diff.mean()) + half,
                  ahead=int((diff > 0).sum()))


def format_table(rows: Sequence[Paired], reference: str) -> str:
    """A Markdown table of the comparisons."""
    lines = [f"| run | folds | mean Dice | minus {reference} | sd | 95 % interval | ahead |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.run} | {r.folds} | {r.mean:.3f} | {r.diff:+.3f} | {r.sd:.3f} | "
                     f"{r.low:+.3f} to {r.high:+.3f} | {r.ahead} of {r.folds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the pooled paired table; return 0 (2 on unreadable input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", type=Path, help="ltuda_cardiac_folds.csv files")
    parser.add_argument("--reference", default="partial", help="run to pair against")
    parser.add_argument("--splits", default=None,
                        help="comma-separated patient-split label per file (files of one "
                        "split pair their folds; default: every file its own split)")
    args = parser.parse_args(argv)
    splits = args.splits.split(",") if args.splits else None
    try:
        folds = read_folds(args.csv, splits)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    runs = sorted({run for f in folds.values() for run in f} - {args.reference})
    rows = []
    for run in runs:
        try:
            rows.append(paired(folds, run, args.reference))
        except ValueError as exc:
            parser.error(str(exc))
    print(format_table(rows, args.reference))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
