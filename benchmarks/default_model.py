"""The shipped default OneSeg model: accuracy, test-time adaptation, organ-aware start, speed.

Four measurements, each optional (``--parts``):

* ``leftatrium``: one slice (the atrium's middle slice) propagated on the held-out LeftAtrium
  cases (those after the first ``--train``) with the default model, the default model adapted
  to that slice (guided test-time adaptation), the default model with its batch-norm
  statistics re-estimated on the volume (``norm``), and ``--reference-model`` (e.g. one
  trained on the first 30 LeftAtrium images only).
* ``abdomen``: each AbdomenTS organ (CT and MR) from its largest slice, with the default model,
  the default model adapted to the volume (test-time adaptation, once per volume): guided by
  the annotated slices of all organs, its batch-norm statistics re-estimated (``norm``), and
  label-free (``self``) for each of ``--adapt`` seconds; chained demons registration; and the
  hybrid of OneSeg and registration (``--method hybrid``) with the default, the guided and
  the ``norm`` model.
* ``select``: on AbdomenTS, where the start slice lands. Organ-blind selection (the most
  representative slice of the volume) against organ-aware selection given a rough mark of the
  organ on the slice a quarter into its extent (``oneseg select --annotation``); each start's
  Dice after annotating it (0 when the start holds none of the organ).
* ``speed``: wall seconds of ``sparseseg --help`` and of ``sparseseg oneseg propagate`` on one
  LeftAtrium volume, as a user runs them (a new process each, best of ``--repeats``).

Prints tables and writes ``default_model.csv`` to ``--out``. Run from the repository root::

    python -m benchmarks.default_model --reference-model benchmarks/results/curve_model_leftatrium
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._oneseg_common import one_slice, organ_starts, propagate, start_run
from benchmarks._tables import write_csv
from sparseseg import oneseg
from sparseseg.io import find_cases, read_label, read_volume, write_volume
from sparseseg.io.axes import to_slices
from sparseseg.metrics import dice
from sparseseg.oneseg.model import DEFAULT_MODEL_DIR, OneSegModel

PARTS = ("leftatrium", "abdomen", "select", "speed")
GUIDED_CAP = 120.0
"""Time cap of guided adaptation (its 10 steps take 1-5 s; the cap only guards a slow run)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model to measure")
    parser.add_argument("--reference-model", default=None,
                        help="LeftAtrium-only model to compare with (leftatrium part)")
    parser.add_argument("--train", type=int, default=30,
                        help="LeftAtrium cases before the held-out ones")
    parser.add_argument("--limit", type=int, default=10, help="held-out LeftAtrium cases")
    parser.add_argument("--adapt", default="30",
                        help="label-free adaptation seconds, comma-separated ('' for none)")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (speed)")
    parser.add_argument("--out", default="benchmarks/results/default_model")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def propagate_dice(model: object, image, mask: np.ndarray, k: int, *, method: str = "oneseg",
                   ) -> float:
    """Dice of ``mask`` propagated from its slice ``k`` (0 when that slice holds none of it)."""
    result, _ = propagate(model, image, one_slice(mask, k), method)
    return dice(result > 0, mask)


def leftatrium(args: argparse.Namespace, model: OneSegModel) -> list[dict]:
    """Default against reference model on held-out LeftAtrium cases."""
    cases = find_cases(Path(args.data) / "LeftAtrium", with_labels=True)
    cases = cases[args.train:args.train + args.limit]
    models = {"default": model}
    if args.reference_model:
        models["reference"] = OneSegModel.load(args.reference_model)
    rows = []
    for case in cases:
        image, mask = read_volume(case.image), read_label(case.label).array > 0
        k = organ_starts(mask)["middle"]
        models["guided"] = oneseg.adapt(model=model, image=image, seconds=GUIDED_CAP,
                                        annotation=one_slice(mask, k), device="cpu")
        models["norm"] = oneseg.adapt(model=model, image=image, seconds=GUIDED_CAP,
                                      mode="norm", device="cpu")
        for name, m in models.items():
            rows.append({"part": "leftatrium", "case": case.name, "organ": "atrium",
                         "variant": name, "start": k, "dice": propagate_dice(m, image, mask, k)})
    return rows


def abdomen(args: argparse.Namespace, model: OneSegModel) -> list[dict]:
    """Default, adapted default and registration on every AbdomenTS organ."""
    seconds = [float(s) for s in args.adapt.split(",") if s.strip() and float(s) > 0]
    rows = []
    for case in find_cases(Path(args.data) / "AbdomenTS", with_labels=True):
        image, label = read_volume(case.image), read_label(case.label).array
        organs = [int(v) for v in np.unique(label) if v]
        starts = {o: organ_starts(label == o)["largest"] for o in organs}
        annotation = np.zeros_like(label)  # every organ drawn on its largest slice
        for organ, k in starts.items():
            drawn = one_slice(label == organ, k) > 0
            annotation[drawn] = organ
        guided = oneseg.adapt(model=model, image=image, seconds=GUIDED_CAP,
                              annotation=annotation, device="cpu")
        norm = oneseg.adapt(model=model, image=image, seconds=GUIDED_CAP, mode="norm",
                            device="cpu")
        variants = {"default": model, "registration": None, "guided": guided, "norm": norm,
                    "hybrid": model, "hybrid guided": guided, "hybrid norm": norm}
        for s in seconds:
            variants[f"self {s:g}s"] = oneseg.adapt(model=model, image=image, seconds=s,
                                                    mode="self", device="cpu")
        for organ in organs:
            mask = label == organ
            k = starts[organ]
            for name, m in variants.items():
                method = ("registration" if name == "registration"
                          else "hybrid" if name.startswith("hybrid") else "oneseg")
                rows.append({"part": "abdomen", "case": case.name, "organ": organ,
                             "variant": name, "start": k,
                             "dice": propagate_dice(m, image, mask, k, method=method)})
    return rows


def select(args: argparse.Namespace, model: OneSegModel) -> list[dict]:
    """Organ-blind against organ-aware start slices on every AbdomenTS organ."""
    rows = []
    for case in find_cases(Path(args.data) / "AbdomenTS", with_labels=True):
        image, label = read_volume(case.image), read_label(case.label).array
        blind = oneseg.select(model=model, image=image, device="cpu")
        for organ in (int(v) for v in np.unique(label) if v):
            mask = label == organ
            present = np.flatnonzero(to_slices(mask).any(axis=(1, 2)))
            mark = int(present[len(present) // 4])  # a rough mark a quarter into the organ
            aware = oneseg.select(model=model, image=image, annotation=one_slice(mask, mark),
                                  device="cpu")
            for name, k in (("blind", blind), ("mark", mark), ("aware", aware)):
                rows.append({"part": "select", "case": case.name, "organ": organ,
                             "variant": name, "start": k,
                             "holds_organ": bool(to_slices(mask)[k].any()),
                             "dice": propagate_dice(model, image, mask, k)})
    return rows


def _wall(cmd: list[str], repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.monotonic()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.monotonic() - start)
    return float(best)


def speed(args: argparse.Namespace, model_dir: str) -> list[dict]:
    """Wall seconds of whole CLI commands, each in a new process."""
    # The console script installed beside this Python (not whichever is first on PATH: a
    # pyenv shim there adds a shell and 0.05 s); else `python -m sparseseg`, the same entry.
    script = Path(sys.executable).with_name("sparseseg")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "sparseseg"]
    case = find_cases(Path(args.data) / "LeftAtrium", with_labels=True)[args.train]
    label = read_label(case.label)
    k = organ_starts(label.array > 0)["middle"]
    rows = [{"part": "speed", "case": "", "organ": "", "variant": "sparseseg --help",
             "seconds": _wall(base + ["--help"], args.repeats)}]
    with tempfile.TemporaryDirectory() as tmp:
        ann = write_volume(Path(tmp) / "ann.nii.gz", one_slice(label.array > 0, k), label)
        cmd = base + ["oneseg", "propagate", "-i", str(case.image), "-a", str(ann),
                      "-o", str(Path(tmp) / "out.nii.gz"), "-q"]
        if model_dir != str(DEFAULT_MODEL_DIR):
            cmd += ["-m", model_dir]
        rows.append({"part": "speed", "case": case.name, "organ": "",
                     "variant": "oneseg propagate", "seconds": _wall(cmd, args.repeats)})
    return rows


def summarise(rows: list[dict]) -> str:
    """Mean Dice per part, case group and variant; seconds for the speed part."""
    lines = []
    for part in PARTS:
        sel = [r for r in rows if r["part"] == part]
        if not sel:
            continue
        lines.append(f"\n{part}")
        if part == "speed":
            lines += [f"  {r['variant']:<20} {r['seconds']:.2f} s" for r in sel]
            continue
        groups = sorted({r["case"] for r in sel}) if part != "leftatrium" else ["all"]
        for g in groups:
            for v in dict.fromkeys(r["variant"] for r in sel):
                d = [r["dice"] for r in sel if r["variant"] == v and g in ("all", r["case"])]
                extra = ""
                if part == "select":
                    held = [r["holds_organ"] for r in sel
                            if r["variant"] == v and r["case"] == g]
                    extra = f"  start holds the organ {sum(held)}/{len(held)}"
                lines.append(f"  {g:<8} {v:<14} Dice {np.mean(d):.3f}  (n={len(d)}){extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = start_run(args)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)} (choose from {', '.join(PARTS)})")
    model = OneSegModel.load(args.model)
    rows: list[dict] = []
    for part in parts:
        if part == "speed":
            rows += speed(args, args.model)
        else:
            rows += {"leftatrium": leftatrium, "abdomen": abdomen, "select": select}[part](
                args, model)
    print(summarise(rows))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv(out / "default_model.csv", [{c: row.get(c, "") for c in columns} for row in rows])
    print(f"\nwrote {out / 'default_model.csv'}")


if __name__ == "__main__":
    main()
