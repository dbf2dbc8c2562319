"""Why LTUDA does or does not beat the partial-label baseline on Cardiac: three measurements.

Trains the runs of one cross-validation fold of :mod:`benchmarks.ltuda_cardiac` (the same
patients, single-structure subsets and training settings), keeping every epoch's weights (the
student's, and the mean teacher's), then measures, after training (outside the time budget):

1. **Pseudo-labels** (``ltuda_diagnose_pseudo.csv``): for the structures each training subset
   does *not* label, the teacher's merged pseudo-labels (:func:`merge_pseudo_labels` on the
   unaugmented slices) against the real labels of those training patients, pooled over their
   voxels at the network's size: Dice, precision, recall; the same on the pixels the teacher
   is confident about (every unlabeled channel at or above ``--confidence`` or at or below one
   minus it: ``conf_dice``, and ``conf_cover``, the fraction of the structure's true voxels
   there); ``seen_dice``, the same network on the patients whose subset labels the structure;
   ``test_dice``, on the test patients (same measure). Taken at the end of the warm-up, the end
   of stage 1, the saved epoch and the last epoch (for ``partial``: its student, the saved and
   last epochs).
2. **Stage cost** (``ltuda_diagnose_stages.csv``): epochs, steps, seconds (validation
   included), seconds per epoch and slices per second of each phase (warm-up, stage 1,
   stage 2; ``partial`` for the baseline).
3. **Validation choice** (``ltuda_diagnose_epochs.csv``, ``ltuda_diagnose_summary.csv``): each
   epoch's validation score (what the keeper sees) and the test Dice (the benchmark's: 3D, per
   case, largest component) of the weights the keeper would save at that epoch, of the
   student and of the teacher; the summary gives the saved epoch's test Dice against the best
   epoch's on the test patients and the last one's, their rank correlation, and how many
   validation cases are frames of patients whose other frame is trained on.

Choosing an epoch by test Dice is not a model-selection rule (the test patients must stay
unseen); the epoch table only measures how far the rule in use is from the best it could do.

Usage (fold 0 of the four-fold cross-validation, both methods one after the other)::

    python -m benchmarks.ltuda_diagnose --minutes 12 --strong-views 1 --folds 4 --fold 0 \\
        --methods ltuda,partial --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._ltuda_common import (
    evaluate,
    format_rows,
    run_entry,
    train_model,
    write_subset,
)
from benchmarks._tables import write_csv
from benchmarks.ltuda_cardiac import (
    RUNS,
    STRUCTURES,
    patient_folds,
    patient_of,
    patient_order,
    run_options,
    split_runs,
    structure_subsets,
)

ORGANS = list(STRUCTURES)


def main(argv: list[str] | None = None) -> int:
    """Run the diagnosis; print and write its tables; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/Cardiac", help="Cardiac dataset")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per run")
    parser.add_argument("--methods", default="ltuda,partial",
                        help="comma-separated runs among partial,cda,ltuda (trained in turn)")
    parser.add_argument("--folds", type=int, default=4, help="folds of the cross-validation")
    parser.add_argument("--fold", type=int, default=0, help="the fold to diagnose (0-based)")
    parser.add_argument("--confidence", type=float, default=0.9,
                        help="teacher probability that counts as confident (pseudo table)")
    parser.add_argument("--eval-every", type=int, default=1,
                        help="score every Nth epoch on the test patients (the saved and the "
                        "last epochs always)")
    parser.add_argument("--no-tone-augmentation", dest="tone", action="store_false")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", default="bce+dice", choices=("bce", "bce+dice"))
    parser.add_argument("--strong-views", type=int, default=2)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--pseudo-confidence", type=float, default=0.9,
                        help="teacher confidence below which ltuda-confident leaves a "
                        "pseudo-label pixel unsupervised")
    parser.add_argument("--stage1-fraction", type=float, default=0.5,
                        help="fraction of an ltuda run (time) before stage 2 (1: stage 1 only)")
    parser.add_argument("--warmup-fraction", type=float, default=0.3,
                        help="fraction of a cda/ltuda run (time) on partial labels alone")
    parser.add_argument("--val-group", metavar="REGEX", default=None,
                        help="hold out whole patients for validation (e.g. 'patient\\d+')")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the CSVs")
    parser.add_argument("--work", default=None, help="keep models and snapshots here")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in RUNS or m == "full"]
    if unknown:
        parser.error(f"unknown run(s): {unknown}")
    if not 0 <= args.fold < args.folds:
        parser.error(f"--fold takes 0..{args.folds - 1} (0-based)")
    if not 0.5 < args.confidence < 1:
        parser.error("--confidence must be in (0.5, 1)")
    if args.eval_every < 1:
        parser.error("--eval-every must be >= 1")

    import torch

    from sparseseg.io import find_cases

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cases = find_cases(args.data, with_labels=True)
    order = patient_order(cases, args.seed)
    if args.folds < 2 or args.folds > len(order) // 2:
        parser.error(f"--folds must be 2..{len(order) // 2}")
    test_p, train_p = patient_folds(order, args.folds)[args.fold]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def of(names: list[str]) -> list:
        return [c for c in cases if patient_of(c) in names]

    epochs_rows, stage_rows, pseudo_rows, summary_rows = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        print(f"fold {args.fold} (of 0..{args.folds - 1}): test patients {len(test_p)}, ",
              end="")
        runs = split_runs(methods, of, train_p, work, args)
        truth = Truth(work, of(train_p), of(test_p), structure_subsets(train_p), args.size)
        for name, entry in runs.items():
            specs, method, own = run_entry(entry)
            snaps = Snapshots(work / f"snapshots_{name}")
            start = time.monotonic()
            model = train_run(name, specs, method, work, args, snaps, **own)
            print(f"{name}: trained {(time.monotonic() - start) / 60:.1f} min, "
                  f"{len(snaps.rows)} epochs; scoring the epochs", flush=True)
            start = time.monotonic()
            final = evaluate(model, of(test_p), STRUCTURES, work / f"pred_{name}")
            config = json.loads((model / "config.json").read_text())
            rows = epoch_rows(name, snaps, truth, args)
            epochs_rows += rows
            stage_rows += stage_table(name, snaps.rows, snaps.batch_size,
                                      snaps.steps_per_epoch)
            pseudo_rows += pseudo_table(name, snaps, truth, args)
            summary_rows.append(summary(name, rows, final, config))
            print(f"{name}: scored in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    for title, rows, stem in (("epochs", epochs_rows, "epochs"),
                              ("stage cost", stage_rows, "stages"),
                              ("pseudo-labels", pseudo_rows, "pseudo"),
                              ("validation choice", summary_rows, "summary")):
        write_csv(out / f"ltuda_diagnose_{stem}.csv", rows)
        print(f"\n{title}\n{format_rows(rows)}")
    print(f"\nwrote {out}/ltuda_diagnose_{{epochs,stages,pseudo,summary}}.csv")
    return 0


class Snapshots:
    """The ``on_epoch`` hook of :func:`sparseseg.ltuda.train`: writes each epoch's student
    (and teacher) weights to ``folder`` and records the epoch's phase, steps and validation.

    Args:
        folder: Where the weights go (``student_E.safetensors``, ``teacher_E.safetensors``).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.batch_size = 0
        self.steps_per_epoch = 0

    def __call__(self, result, trainer) -> None:
        from safetensors.torch import save_file

        def cpu(state):
            return {k: v.detach().cpu().contiguous() for k, v in state.items()}

        save_file(cpu(trainer.model.state_dict()),
                  str(self.folder / f"student_{result.epoch}.safetensors"))
        if trainer.teacher is not None:
            save_file(cpu(trainer.teacher.state_dict()),
                      str(self.folder / f"teacher_{result.epoch}.safetensors"))
        self.batch_size = trainer.config.batch_size
        self.steps_per_epoch = trainer.steps_per_epoch
        self.rows.append({"epoch": result.epoch, "phase": phase(trainer),
                          "step": trainer.step, "elapsed": result.elapsed,
                          "val": result.score, "classifier": result.classifier,
                          "best": result.best, "teacher": trainer.teacher is not None})

    def model(self, epoch: int, weights: str, size: int, base_channels: int):
        """The LTUDA model of ``epoch`` with the ``student`` or ``teacher`` U-Net."""
        from safetensors.torch import load_file

        from sparseseg.ltuda.model import LTUDAModel
        from sparseseg.ltuda.network import default_depth

        model = LTUDAModel(n_organs=len(ORGANS), base_channels=base_channels,
                           depth=default_depth(size))
        state = load_file(str(self.folder / f"student_{epoch}.safetensors"))
        if weights == "teacher":
            teacher = load_file(str(self.folder / f"teacher_{epoch}.safetensors"))
            state.update({f"unet.{k}": v for k, v in teacher.items()})
        model.load_state_dict(state)
        return model.eval()


def phase(trainer) -> str:
    """The phase of a trainer's last step: ``partial``, ``warm-up``, ``stage 1``, ``stage 2``."""
    if trainer.config.method == "partial":
        return "partial"
    if trainer.stage == 2:
        return "stage 2"
    return "warm-up" if trainer.warming_up() else "stage 1"


def train_run(name: str, specs: list, method: str, work: Path, args: argparse.Namespace,
              snaps: Snapshots, **options: object) -> Path:
    """Train one run as :func:`benchmarks._ltuda_common.train_and_evaluate` does, with the
    snapshot hook; return its model folder. ``options`` are the run's own settings
    (:func:`benchmarks.ltuda_cardiac.split_runs`); they replace the command line's."""
    settings = {**run_options(args), **options}
    settings.pop("threads")  # set once for the whole process in main()
    return train_model(name, specs, method, work, on_epoch=snaps, **settings)


class Truth:
    """The real labels of a fold: training patients (with the subset that labels each) and
    test patients, as network-size slices and as original volumes.

    Args:
        work: Scratch folder (fully labeled copies are written there).
        train: Training cases.
        test: Test cases.
        subsets: Training patients of each structure's subset (order of ``STRUCTURES``).
        size: Network input size.
    """

    def __init__(self, work: Path, train: Sequence, test: Sequence,
                 subsets: list[list[str]], size: int) -> None:
        from sparseseg.io import read_label, read_volume
        from sparseseg.ltuda import DatasetSpec
        from sparseseg.ltuda.data import load_cases

        full = {o: [v] for o, v in STRUCTURES.items()}
        self.train = load_cases([DatasetSpec(write_subset(work / "truth_train", train, None),
                                             full)], ORGANS, size)
        self.test_slices = load_cases([DatasetSpec(write_subset(work / "truth_test", test,
                                                                None), full)], ORGANS, size)
        self.labels = {c.name: next(k for k, names in enumerate(subsets)
                                    if re.sub(r"_frame\d+$", "", c.name) in names)
                       for c in self.train}
        self.test = [(read_volume(c.image), read_label(c.label).array) for c in test]


def _counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)],
                    dtype=np.int64)


def scores(counts: np.ndarray) -> tuple[float, float, float]:
    """Dice, precision and recall of pooled ``(tp, fp, fn)`` counts (NaN where undefined).

    Example:
        >>> scores(np.array([6, 2, 4]))
        (0.6666666666666666, 0.75, 0.6)
    """
    tp, fp, fn = (float(v) for v in counts)
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    return dice, precision, recall


def class_probabilities(model, image: np.ndarray):
    """Sigmoid organ probabilities ``(S, organs, H, W)`` of normalised ``(S, H, W)`` slices."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, image.shape[0], 16):
            x = torch.from_numpy(np.ascontiguousarray(image[i:i + 16]))[:, None].float()
            out.append(torch.sigmoid(model(x)[0]))
    return torch.cat(out)


def pseudo_quality(model, truth: Truth, confidence: float) -> list[dict]:
    """Per structure: the pseudo-label counts on the training patients that do not label it,
    the confident ones, the network on the patients that label it and on the test patients."""
    import torch

    from sparseseg.ltuda.classify import one_hot_organs, threshold_classify
    from sparseseg.ltuda.pseudo import merge_pseudo_labels

    n = len(ORGANS)
    pseudo_c, conf_c, seen_c, test_c = (np.zeros((n, 3), np.int64) for _ in range(4))
    cover = np.zeros((n, 2), np.int64)  # true voxels in confident pixels, all true voxels
    for case in truth.train:
        k = truth.labels[case.name]
        probs = class_probabilities(model, case.image)
        target = torch.from_numpy(case.target.astype(np.float32))
        labeled = torch.zeros(1, n)
        labeled[0, k] = 1
        pseudo = merge_pseudo_labels(probs, target * labeled[:, :, None, None],
                                     labeled.expand(len(probs), n)).numpy() > 0.5
        own = one_hot_organs(threshold_classify(probs), n).numpy() > 0.5
        true = case.target > 0
        unl = np.delete(probs.numpy(), k, axis=1)
        sure = ((unl >= confidence) | (unl <= 1 - confidence)).all(axis=1)
        for j in range(n):
            if j == k:
                seen_c[j] += _counts(own[:, j], true[:, j])
                continue
            pseudo_c[j] += _counts(pseudo[:, j], true[:, j])
            conf_c[j] += _counts(pseudo[:, j] & sure, true[:, j] & sure)
            cover[j] += [np.sum(true[:, j] & sure), np.sum(true[:, j])]
    for case in truth.test_slices:
        probs = class_probabilities(model, case.image)
        own = one_hot_organs(threshold_classify(probs), n).numpy() > 0.5
        for j in range(n):
            test_c[j] += _counts(own[:, j], case.target[:, j] > 0)
    rows = []
    for j, organ in enumerate(ORGANS):
        dice, precision, recall = scores(pseudo_c[j])
        rows.append({"structure": organ, "seen_dice": scores(seen_c[j])[0],
                     "pseudo_dice": dice, "pseudo_precision": precision,
                     "pseudo_recall": recall, "conf_dice": scores(conf_c[j])[0],
                     "conf_cover": cover[j, 0] / max(cover[j, 1], 1),
                     "test_dice": scores(test_c[j])[0]})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "structure"}
    return rows + [{"structure": "mean", **mean}]


def test_dice(model, truth: Truth, classifier: str) -> list[float]:
    """The benchmark's test Dice of a model (per structure, mean over cases; 3D, original
    grid, largest component), as :func:`benchmarks._ltuda_common.evaluate` computes it."""
    import torch

    from sparseseg.ltuda.predictor import segment_volume
    from sparseseg.metrics import dice

    config = {"size": truth.train[0].image.shape[-1], "organs": ORGANS, "components": {}}
    per = {o: [] for o in ORGANS}
    for volume, ref in truth.test:
        pred = segment_volume(model, volume, config, torch.device("cpu"), classifier=classifier)
        for k, organ in enumerate(ORGANS):
            per[organ].append(dice(pred == k + 1, ref == STRUCTURES[organ]))
    return [float(np.mean(per[o])) for o in ORGANS]


def epoch_rows(name: str, snaps: Snapshots, truth: Truth,
               args: argparse.Namespace) -> list[dict]:
    """One row per epoch: phase, cost, validation, and the test Dice of the weights the
    keeper would save (``test_kept``), of the student and of the teacher (scored epochs)."""
    rows = []
    saved = max((r["epoch"] for r in snaps.rows if r["best"]), default=None)
    last = snaps.rows[-1]["epoch"]
    before = 0.0
    steps_before = 0
    for r in snaps.rows:
        e = r["epoch"]
        seconds = r["elapsed"] - before
        steps = r["step"] - steps_before
        before, steps_before = r["elapsed"], r["step"]
        row = {"run": name, "epoch": e, "phase": r["phase"], "steps": steps,
               "seconds": seconds, "slices_per_s": steps * snaps.batch_size / seconds,
               "val": r["val"], "classifier": r["classifier"],
               "saved": "yes" if e == saved else ""}
        scored = (e - 1) % args.eval_every == 0 or e in (saved, last)
        student = teacher = kept = math.nan
        if scored:
            model = snaps.model(e, "student", args.size, args.base_channels)
            student = float(np.mean(test_dice(model, truth, "linear")))
            if r["teacher"]:
                teacher_model = snaps.model(e, "teacher", args.size, args.base_channels)
                teacher = float(np.mean(test_dice(teacher_model, truth, "linear")))
            if r["classifier"] == "teacher":
                kept = teacher
            elif r["classifier"] == "linear":
                kept = student
            else:
                kept = float(np.mean(test_dice(model, truth, r["classifier"])))
        rows.append({**row, "test_kept": kept, "test_student": student,
                     "test_teacher": teacher})
    return rows


def stage_table(name: str, rows: list[dict], batch_size: int,
                steps_per_epoch: int) -> list[dict]:
    """Epochs, steps, seconds, seconds per (full) epoch and slices per second of each phase.

    An epoch counts in the phase of its last step; the last epoch may be cut short by the
    time limit, which is why seconds per epoch is over the steps done.
    """
    out = []
    before, steps_before = 0.0, 0
    per: dict[str, list[float]] = {}
    for r in rows:
        entry = per.setdefault(r["phase"], [0, 0, 0.0])
        entry[0] += 1
        entry[1] += r["step"] - steps_before
        entry[2] += r["elapsed"] - before
        before, steps_before = r["elapsed"], r["step"]
    for ph, (epochs, steps, seconds) in per.items():
        out.append({"run": name, "phase": ph, "epochs": epochs, "steps": steps,
                    "seconds": seconds, "s_per_epoch": seconds / steps * steps_per_epoch,
                    "slices_per_s": batch_size * steps / seconds})
    return out


def pseudo_table(name: str, snaps: Snapshots, truth: Truth,
                 args: argparse.Namespace) -> list[dict]:
    """:func:`pseudo_quality` of the teacher (student for ``partial``) at the phase ends, the
    saved epoch and the last epoch."""
    rows = snaps.rows
    points: dict[str, int] = {}
    for ph, label in (("warm-up", "end of warm-up"), ("stage 1", "end of stage 1")):
        epochs = [r["epoch"] for r in rows if r["phase"] == ph]
        if epochs:
            points[label] = max(epochs)
    saved = [r["epoch"] for r in rows if r["best"]]
    if saved:
        points["saved epoch"] = max(saved)
    points["last epoch"] = rows[-1]["epoch"]
    out = []
    for label, epoch in points.items():
        weights = "teacher" if rows[0]["teacher"] else "student"
        model = snaps.model(epoch, weights, args.size, args.base_channels)
        for r in pseudo_quality(model, truth, args.confidence):
            out.append({"run": name, "when": label, "epoch": epoch, "weights": weights, **r})
    return out


def summary(name: str, rows: list[dict], final: dict, config: dict) -> dict:
    """Saved epoch against the best and the last on the test patients; their rank
    correlation; validation cases whose patient's other frame is trained on."""
    scored = [r for r in rows if r["test_kept"] == r["test_kept"]]
    saved = next(r for r in rows if r["saved"])
    best = max(scored, key=lambda r: r["test_kept"])
    val_cases = config["training"]["val_cases"]
    frames = Counter(re.sub(r"_frame\d+$", "", c) for c in val_cases)
    trained = sum(1 for c in val_cases if frames[re.sub(r"_frame\d+$", "", c)] < 2)
    return {"run": name, "epochs": len(rows), "saved_epoch": saved["epoch"],
            "saved_test": saved["test_kept"], "model_folder_test": final["mean"],
            "best_test_epoch": best["epoch"], "best_test": best["test_kept"],
            "gap": best["test_kept"] - saved["test_kept"], "last_test": rows[-1]["test_kept"],
            "val_test_rank_corr": rank_correlation([r["val"] for r in scored],
                                                   [r["test_kept"] for r in scored]),
            "val_cases": len(val_cases), "val_cases_patient_trained": trained}


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties; NaN for fewer than 3 values).

    Example:
        >>> round(rank_correlation([1, 2, 3, 4], [10, 30, 20, 40]), 6)
        0.8
    """
    from scipy.stats import rankdata

    if len(a) < 3:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)  # average ranks for ties
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


if __name__ == "__main__":
    raise SystemExit(main())
