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

Cross-validation (``--folds 4``: every patient is a test patient once; each fold trains on the
others and writes ``ltuda_cardiac_foldK.csv``; ``ltuda_cardiac_folds.csv`` and the printed
summary give each run's mean over the folds and its paired difference to ``partial``). The runs
of all folds share the ``--jobs`` workers, so a single method's folds also train two at a time::

    python -m benchmarks.ltuda_cardiac --minutes 12 --strong-views 1 --folds 4 \
        --methods partial,ltuda
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks._ltuda_common import RunGroup, run_groups, run_methods, write_subset
from benchmarks._tables import write_csv
from sparseseg.io import Case

STRUCTURES = {"right_ventricle": 1, "myocardium": 2, "left_ventricle": 3}
RUNS = ("partial", "cda", "ltuda", "ltuda-confident", "ltuda-strong-only", "ltuda-flip",
        "cda-late", "ltuda-late", "partial-excl", "ltuda-excl", "full")
"""Runs: ``ltuda-confident`` is ``ltuda`` whose pseudo-labels are supervised only where the
teacher is sure (``--pseudo-confidence``, :func:`sparseseg.ltuda.pseudo.confident_mask`);
``ltuda-strong-only`` is ``ltuda`` without the student's weak-view pass after the warm-up
(``weak_view_loss=False``: more steps in the same time); ``ltuda-flip`` is ``ltuda`` whose
pseudo-labels average the teacher over the weak view and its mirror (``teacher_flip``);
``cda-late`` and ``ltuda-late`` train
on partial labels alone for the first half of the run (``warmup_fraction=0.5``), so the
teacher is better when its pseudo-labels start, then on the strong views alone (``ltuda-late``:
stage 2 in the last fifth); ``partial-excl`` and ``ltuda-excl`` add the exclusion of organs
(``exclusion``: a labeled organ's pixels also teach the other channels "absent",
:func:`sparseseg.ltuda.losses.with_exclusion`)."""


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/Cardiac", help="Cardiac dataset")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per run")
    parser.add_argument("--methods", default="partial,cda,ltuda,full",
                        help="comma-separated runs among " + ",".join(RUNS))
    parser.add_argument("--test-patients", type=int, default=5)
    parser.add_argument("--folds", type=int, default=1,
                        help="cross-validate: split the patients into this many disjoint test "
                        "folds (each trains on the rest; --test-patients is then ignored) and "
                        "report every run's mean over the folds and its paired difference to "
                        "partial")
    parser.add_argument("--only-folds", default=None,
                        help="with --folds: run only these folds (comma-separated, 0-based)")
    parser.add_argument("--no-tone-augmentation", dest="tone", action="store_false",
                        help="train without the weak view's gamma/contrast (the paper's "
                        "augmentation)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", default="bce+dice", choices=("bce", "bce+dice"),
                        help="supervised loss (bce: the paper's; default bce+dice)")
    parser.add_argument("--strong-views", type=int, default=2,
                        help="strong CutMix views per batch in cda/ltuda (paper: 2)")
    parser.add_argument("--stage1-fraction", type=float, default=0.5,
                        help="fraction of an ltuda run (time) before stage 2 (1: stage 1 only)")
    parser.add_argument("--warmup-fraction", type=float, default=0.3,
                        help="fraction of a cda/ltuda run (time) on partial labels alone, "
                        "before the teacher's pseudo-labels supervise")
    parser.add_argument("--val-group", default=None, metavar="REGEX",
                        help="hold out whole patients for validation (e.g. 'patient\\d+'; "
                        "default: frame by frame, so the other frame of a validation "
                        "patient trains)")
    parser.add_argument("--pseudo-confidence", type=float, default=0.9,
                        help="teacher confidence below which ltuda-confident leaves a "
                        "pseudo-label pixel unsupervised")
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

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out)
    csv_path = Path(args.csv) if args.csv else out / "ltuda_cardiac.csv"
    cases = find_cases(args.data, with_labels=True)
    order = patient_order(cases, args.seed)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in RUNS]
    if unknown:
        parser.error(f"unknown run(s): {unknown}")
    if args.folds < 1 or args.folds > len(order) // 2:
        parser.error(f"--folds must be 1..{len(order) // 2}")
    only = set(range(args.folds))
    if args.only_folds:
        try:
            only = {int(f) for f in args.only_folds.split(",") if f.strip()}
        except ValueError:
            parser.error(f"--only-folds: not a list of fold numbers: {args.only_folds!r}")
        if not only or not only <= set(range(args.folds)):
            parser.error(f"--only-folds takes folds 0..{args.folds - 1} (0-based)")
    out.mkdir(parents=True, exist_ok=True)  # only once the options are known to be good

    def of(names: list[str]) -> list:
        return [c for c in cases if patient_of(c) in names]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        if args.folds == 1:
            test_p, train_p = order[: args.test_patients], order[args.test_patients:]
            print(f"test patients {len(test_p)}, ", end="")
            run_methods(split_runs(wanted, of, train_p, work, args), of(test_p), STRUCTURES,
                        work, csv_path=csv_path, jobs=args.jobs, **run_options(args))
            png = prediction_figure(out / "ltuda_cardiac.png", of(test_p)[0], wanted, work)
            print(f"wrote {csv_path} and {png}")
            return 0
        groups = []
        for fold, (test_p, train_p) in enumerate(patient_folds(order, args.folds)):
            if fold not in only:
                continue
            fold_work = work / f"fold{fold}"
            print(f"fold {fold} (of 0..{args.folds - 1}): test patients {len(test_p)}, ",
                  end="")
            groups.append((fold, RunGroup(split_runs(wanted, of, train_p, fold_work, args),
                                          of(test_p), fold_work,
                                          csv_path.with_name(f"{csv_path.stem}_fold{fold}.csv"))))
        tables = run_groups([g for _, g in groups], STRUCTURES, jobs=args.jobs,
                            **run_options(args))
        rows = [{"fold": fold, **r} for (fold, _), table in zip(groups, tables, strict=True)
                for r in table]
    folds_csv = csv_path.with_name(f"{csv_path.stem}_folds.csv")
    write_csv(folds_csv, rows)
    print(fold_summary(rows, wanted))
    print(f"wrote {folds_csv}")
    return 0


def patient_of(case: Case) -> str:
    """The patient of a Cardiac case (``patient001_frame01`` -> ``patient001``)."""
    return re.sub(r"_frame\d+$", "", case.name)


def patient_order(cases: list[Case], seed: int) -> list[str]:
    """The patients of ``cases`` in the seed's random order (the first ones test)."""
    patients = sorted({patient_of(c) for c in cases})
    rng = np.random.default_rng(seed)
    return [patients[i] for i in rng.permutation(len(patients))]


def patient_folds(patients: list[str], folds: int) -> list[tuple[list[str], list[str]]]:
    """``(test, train)`` patients of each fold: disjoint test folds of near-equal size that
    together hold every patient once; each fold trains on all the others."""
    tests = [list(chunk) for chunk in np.array_split(np.array(patients, dtype=object), folds)]
    return [(test, [p for p in patients if p not in test]) for test in tests]


def structure_subsets(train_p: list[str]) -> list[list[str]]:
    """The training patients of each single-structure subset, in the order of STRUCTURES."""
    return [train_p[i::len(STRUCTURES)] for i in range(len(STRUCTURES))]


def split_runs(wanted: list[str], of: Callable[[list[str]], list], train_p: list[str],
               work: Path, args: argparse.Namespace) -> dict[str, tuple[list, str]]:
    """Write the partial subsets of ``train_p`` under ``work`` (and its fully labeled set when
    ``full`` is wanted); return the wanted runs (name -> (dataset specs, method))."""
    from sparseseg.ltuda import DatasetSpec

    work.mkdir(parents=True, exist_ok=True)
    groups = structure_subsets(train_p)
    partial_specs = []
    for (organ, value), names in zip(STRUCTURES.items(), groups, strict=True):
        folder = write_subset(work / f"partial_{organ}", of(names), [value])
        partial_specs.append(DatasetSpec(folder, {organ: [value]}))
    catalogue = {
        "partial": (partial_specs, "partial"),
        "cda": (partial_specs, "cda"),
        "ltuda": (partial_specs, "ltuda"),
        "ltuda-confident": (partial_specs, "ltuda",
                            {"pseudo_confidence": args.pseudo_confidence}),
        "ltuda-strong-only": (partial_specs, "ltuda", {"weak_view_loss": False}),
        "ltuda-flip": (partial_specs, "ltuda", {"teacher_flip": True}),
        "cda-late": (partial_specs, "cda", {"weak_view_loss": False, "warmup_fraction": 0.5}),
        "ltuda-late": (partial_specs, "ltuda", {"weak_view_loss": False, "warmup_fraction": 0.5,
                                                "stage1_fraction": 0.8}),
        "partial-excl": (partial_specs, "partial", {"exclusion": True}),
        "ltuda-excl": (partial_specs, "ltuda", {"exclusion": True}),
    }
    if "full" in wanted:
        full = write_subset(work / "full", of(train_p), None)
        catalogue["full"] = ([DatasetSpec(full, {o: [v] for o, v in STRUCTURES.items()})],
                             "partial")
    print(f"train patients {len(train_p)} ({[len(g) for g in groups]} per subset), "
          f"{args.minutes} min per run", flush=True)
    return {m: catalogue[m] for m in wanted}


def run_options(args: argparse.Namespace) -> dict:
    """Training options of every run (:func:`benchmarks._ltuda_common.run_groups`)."""
    return {"minutes": args.minutes, "size": args.size, "base_channels": args.base_channels,
            "seed": args.seed, "loss": args.loss, "strong_views": args.strong_views,
            "threads": args.threads, "ema": args.ema, "precision": args.precision,
            "tone": args.tone, "stage1_fraction": args.stage1_fraction,
            "warmup_fraction": args.warmup_fraction, "val_group": args.val_group}


def fold_summary(rows: list[dict], runs: list[str]) -> str:
    """Mean Dice of each run over the folds, and each run's paired difference to ``partial``.

    Each fold's mean is over its own test patients; the folds' test patients are disjoint, so
    the mean over folds covers every patient once. ``sd`` is the spread between folds.
    """
    by = {(r["fold"], r["run"]): r for r in rows}
    folds = sorted({r["fold"] for r in rows})
    lines = ["run | mean Dice over folds | sd | per fold | minus partial (mean, sd, per fold)"]
    for run in runs:
        means = np.array([by[f, run]["mean"] for f in folds])
        line = f"{run} | {means.mean():.4f} | {_sd(means)} | " + " ".join(
            f"{m:.4f}" for m in means)
        if "partial" in runs and run != "partial":
            diff = means - np.array([by[f, "partial"]["mean"] for f in folds])
            line += f" | {diff.mean():+.4f}, {_sd(diff)}, " + " ".join(
                f"{d:+.4f}" for d in diff)
        lines.append(line)
    return "\n".join(lines)


def _sd(values: np.ndarray) -> str:
    """Sample standard deviation, or ``-`` for a single fold (it has none)."""
    return f"{values.std(ddof=1):.4f}" if len(values) > 1 else "-"


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
