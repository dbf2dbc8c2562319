"""Shared helpers of the LTUDA benchmarks: partial datasets, training runs, Dice tables."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._jobs import run_jobs
from benchmarks._tables import write_csv
from sparseseg.io import Case, read_label, read_volume, write_volume


def dataset_folder(folder: Path) -> Path:
    """An empty nnU-Net dataset: ``imagesTr/``, ``labelsTr/`` and a minimal ``dataset.json``."""
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}) + "\n")
    return folder


def write_subset(folder: Path, cases: Sequence[Case], keep: Sequence[int] | None) -> Path:
    """Write ``cases`` as an nnU-Net dataset, zeroing every label value not in ``keep``."""
    dataset_folder(folder)
    for case in cases:
        image = read_volume(case.image)
        label = read_label(case.label)
        arr = label.array.copy()
        if keep is not None:
            arr[~np.isin(arr, keep)] = 0
        write_volume(folder / "imagesTr" / f"{case.name}_0000.nii.gz", image.array, image)
        write_volume(folder / "labelsTr" / f"{case.name}.nii.gz", arr, label)
    return folder


def evaluate(model: Path, test: Sequence[Case], organ_values: dict[str, int],
             out: Path) -> dict[str, float]:
    """Predict the test cases; return the mean Dice per organ, ``mean`` and ``confusion``.

    ``confusion`` is the mean over cases of :func:`sparseseg.metrics.organ_confusion`: the
    fraction of organ voxels predicted as another organ.
    """
    from sparseseg.ltuda import predict
    from sparseseg.metrics import dice, organ_confusion

    config = json.loads((model / "config.json").read_text())
    organs = config["organs"]
    scores: dict[str, list[float]] = {o: [] for o in organs}
    confusion = []
    out.mkdir(parents=True, exist_ok=True)
    for case in test:
        file = predict(model=model, inputs=case.image, output=out / f"{case.name}.nii.gz",
                       progress=False)[0]
        pred = read_label(file).array
        ref = read_label(case.label).array
        relabelled = np.zeros_like(pred)
        for k, organ in enumerate(organs):
            scores[organ].append(dice(pred == k + 1, ref == organ_values[organ]))
            relabelled[pred == k + 1] = organ_values[organ]
        confusion.append(organ_confusion(relabelled, ref))
    result = {o: float(np.mean(v)) for o, v in scores.items()}
    result["mean"] = float(np.mean(list(result.values())))
    result["confusion"] = float(np.mean(confusion))
    return result


def train_model(name: str, specs: list, method: str, work: Path, *, minutes: float,
                size: int, base_channels: int, seed: int, loss: str = "bce",
                components: dict[str, int] | None = None, strong_views: int = 2,
                ema: float = 0.999, precision: str = "auto", tone: bool = True,
                stage1_fraction: float = 0.5, warmup_fraction: float = 0.3,
                pseudo_confidence: float = 0.0, weak_view_loss: bool = True,
                teacher_flip: bool = False, exclusion: bool = False,
                val_group: str | None = None,
                on_epoch: Callable | None = None) -> Path:
    """Train one run into ``work/model_NAME`` with the benchmarks' settings; return the folder.

    The one place where a benchmark's options become :func:`sparseseg.ltuda.train` arguments
    (time-limited, no progress bar, ``on_epoch`` passed through).
    """
    from sparseseg.ltuda import train

    return train(output=work / f"model_{name}", datasets=specs, method=method,
                 epochs=10_000, max_time=minutes, size=size,
                 base_channels=base_channels, seed=seed, progress=False, loss=loss,
                 components=components, strong_views=strong_views, ema=ema,
                 precision=precision, tone_augmentation=tone,
                 stage1_fraction=stage1_fraction, warmup_fraction=warmup_fraction,
                 pseudo_confidence=pseudo_confidence, weak_view_loss=weak_view_loss,
                 teacher_flip=teacher_flip, exclusion=exclusion, val_group=val_group,
                 on_epoch=on_epoch)


def train_and_evaluate(name: str, specs: list, method: str, test: Sequence[Case],
                       organ_values: dict[str, int], work: Path, *, threads: int = 1,
                       **settings: object) -> dict:
    """Train one run into ``work/model_NAME``, predict ``work/pred_NAME``, return its row.

    Sets ``threads`` torch threads first (it may run in a worker process of its own);
    ``settings`` are :func:`train_model`'s keyword arguments.
    """
    import torch

    torch.set_num_threads(threads)
    start = time.monotonic()
    model = train_model(name, specs, method, work, **settings)
    minutes_used = (time.monotonic() - start) / 60
    result = evaluate(model, test, organ_values, work / f"pred_{name}")
    config = json.loads((model / "config.json").read_text())
    print(f"{name:8s} " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
    return {"run": name, "method": method, **result, "train_min": minutes_used,
            "best_epoch": config.get("best_epoch"),
            "classifier": f"{config.get('classifier')} ({config.get('weights', 'student')})"}


def run_methods(runs: dict[str, tuple[list, str]], test: Sequence[Case],
                organ_values: dict[str, int], work: Path, *, csv_path: Path, jobs: int = 1,
                **options: object) -> list[dict]:
    """Train each run (name -> (dataset specs, method)), evaluate, print and save a table.

    ``options`` are :func:`train_and_evaluate`'s keyword arguments (``minutes``, ``size``,
    ``base_channels``, ``seed``, ``loss``, ...). With ``jobs`` > 1 that many runs train at once,
    each in its own process with ``threads`` torch threads (two 1-thread runs side by side on
    2 cores get the same CPU each).
    """
    return run_groups([RunGroup(runs, test, work, csv_path)], organ_values, jobs=jobs,
                      **options)[0]


@dataclass(frozen=True)
class RunGroup:
    """Runs that share a test set, a work folder and a table (e.g. one cross-validation fold).

    Attributes:
        runs: Run name -> (dataset specs, method), or (dataset specs, method, options) where
            the run's own :func:`train_and_evaluate` options replace the group's.
        test: Test cases with full labels.
        work: Models go to ``work/model_NAME``, predictions to ``work/pred_NAME``.
        csv_path: The group's table.
    """

    runs: dict[str, tuple[list, str]]
    test: Sequence[Case]
    work: Path
    csv_path: Path


def run_entry(entry: tuple) -> tuple[list, str, dict]:
    """A run's ``(dataset specs, method)`` or ``(dataset specs, method, options)`` as
    ``(specs, method, options)`` (no options: an empty dict)."""
    specs, method, *own = entry
    return specs, method, dict(own[0]) if own else {}


def run_groups(groups: Sequence[RunGroup], organ_values: dict[str, int], *, jobs: int = 1,
               **options: object) -> list[list[dict]]:
    """Train and evaluate the runs of several groups as one pool of ``jobs`` workers.

    ``options`` are :func:`train_and_evaluate`'s keyword arguments, the same for every run.
    All runs of all groups share the pool, so ``jobs`` runs train at once even where one group
    holds fewer runs (a cross-validation of a single method keeps both cores busy). Each
    group's table is written and printed once every run has finished.

    Returns:
        Each group's rows, in the order of ``groups`` and of each group's runs.
    """
    calls = []
    for g in groups:
        for name, entry in g.runs.items():
            specs, method, own = run_entry(entry)
            calls.append(((name, specs, method, list(g.test), organ_values, g.work),
                          {**options, **own}))
    flat = iter(run_jobs(train_and_evaluate, calls, jobs))
    tables = []
    for g in groups:
        rows = [next(flat) for _ in g.runs]
        write_csv(g.csv_path, rows)
        print(format_rows(rows))
        tables.append(rows)
    return tables


def format_rows(rows: Sequence[dict]) -> str:
    """The rows as a plain-text table, one ``|``-separated line per row under a header."""
    keys = list(rows[0])
    lines = [" | ".join(f"{k:>14s}" for k in keys)]
    for row in rows:
        lines.append(" | ".join(f"{v:>14.4f}" if isinstance(v, float) else f"{v!s:>14s}"
                                for v in row.values()))
    return "\n".join(lines)
