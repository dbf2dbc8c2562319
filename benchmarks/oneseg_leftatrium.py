"""OneSeg on real LGE-MRI: train on LeftAtrium images, propagate one slice on held-out cases.

Trains OneSeg self-supervised on the images of the first ``--train`` cases (labels never read),
then, for each held-out case, annotates one slice from its label (the screened slice, and the
slice with the largest atrium area), propagates it with OneSeg and with the training-free
baselines (chained demons registration, plain copy), and scores the result against the full
label (DICE, RAVD %, ASSD mm). Prints a table and writes a CSV.

Run from the repository root::

    python -m benchmarks.oneseg_leftatrium --max-time 15
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

import numpy as np
import torch

from sparseseg import oneseg
from sparseseg.io import SLICE_AXIS, find_cases, read_label, read_volume, to_slices
from sparseseg.metrics import chaos_metrics
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.training import TrainConfig


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/LeftAtrium")
    parser.add_argument("--train", type=int, default=30, help="cases used for training")
    parser.add_argument("--max-time", type=float, default=15.0, help="training minutes")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.05, help="training temperature")
    parser.add_argument("--model", default=None, help="reuse this model folder (skip training)")
    parser.add_argument("--methods", default="oneseg,registration,copy")
    parser.add_argument("--verify", action="store_true", help="per-step verification for all")
    parser.add_argument("--limit", type=int, default=None, help="at most this many val cases")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = find_cases(args.data, with_labels=True)
    train_cases, val_cases = cases[: args.train], cases[args.train :]
    if args.limit:
        val_cases = val_cases[: args.limit]
    model_dir = Path(args.model) if args.model else out / "oneseg_leftatrium_model"
    train_seconds = 0.0
    if not args.model:
        start = time.monotonic()
        oneseg.train(
            images=[c.image for c in train_cases],
            output=model_dir,
            network=NetworkConfig(width=args.width, temperature=args.temperature),
            training=TrainConfig(
                epochs=args.epochs,
                max_time=args.max_time,
                size=args.size,
                seed=args.seed,
                lr=args.lr,
            ),
            device="cpu",
        )
        train_seconds = time.monotonic() - start
    model = OneSegModel.load(model_dir)
    methods = args.methods.split(",")
    rows = []
    for case in val_cases:
        image, label = read_volume(case.image), read_label(case.label)
        truth = label.array > 0
        areas = to_slices(truth).reshape(truth.shape[SLICE_AXIS], -1).sum(1)
        starts = {
            "screened": oneseg.select(model=model, image=image),
            "largest": int(np.argmax(areas)),
        }
        for start_name, k in starts.items():
            sl = [slice(None)] * 3
            sl[SLICE_AXIS] = k
            ann = np.zeros(truth.shape, np.uint8)
            ann[tuple(sl)] = truth[tuple(sl)]
            for method in methods:
                t0 = time.monotonic()
                if not ann.any():
                    pred = np.zeros_like(ann)
                else:
                    pred = oneseg.propagate(
                        model=model if method == "oneseg" else None,
                        image=image,
                        annotation=ann,
                        method=method,
                        verify=args.verify,
                    ).array
                seconds = time.monotonic() - t0
                m = chaos_metrics(pred > 0, truth, spacing=label.spacing)
                rows.append(
                    {
                        "case": case.name,
                        "start": start_name,
                        "slice": k,
                        "method": method,
                        "dice": m["dice"],
                        "ravd": m["ravd"],
                        "assd": m["assd"],
                        "seconds": seconds,
                    }
                )
                logging.info(
                    "%s %s(k=%d) %s dice=%.3f %.1fs",
                    case.name,
                    start_name,
                    k,
                    method,
                    m["dice"],
                    seconds,
                )
    with open(out / "oneseg_leftatrium.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"\nLeftAtrium: {len(train_cases)} training images, {len(val_cases)} validation "
        f"cases, training {train_seconds / 60:.1f} min, model {model_dir}"
    )
    print(f"{'start':<9} {'method':<13} {'DICE':>6} {'RAVD %':>7} {'ASSD mm':>8} {'s/vol':>6}")
    for start_name in ("screened", "largest"):
        for method in methods:
            sel = [r for r in rows if r["start"] == start_name and r["method"] == method]
            mean = {
                k: float(np.mean([r[k] for r in sel])) for k in ("dice", "ravd", "assd", "seconds")
            }
            print(
                f"{start_name:<9} {method:<13} {mean['dice']:6.3f} {mean['ravd']:7.1f} "
                f"{mean['assd']:8.2f} {mean['seconds']:6.2f}"
            )


if __name__ == "__main__":
    main()
