"""Cost of propagation (seconds, peak memory per volume size) and training throughput.

Propagation: each measurement runs in a fresh subprocess (so peak resident memory is that of
one propagation, reading and writing included) on a generated smooth random volume of the given
size, with an untrained network of the default architecture (cost does not depend on the
weights). Writes ``oneseg_cost.csv`` and ``oneseg_cost.png`` (seconds against voxels, one line
per method).

Training throughput: a short timed training of each trainer on generated phantoms, with the
default settings (OneSeg: batches of 8 slice triples at 128 x 128, default network; LTUDA:
batches of 4 slices at 128 x 128, base width 16), ``--train-steps`` steps after 2 warm-up steps,
in float32 and in bf16 mixed precision (``--train-precisions``; bf16 skipped where missing).
A OneSeg sample is a (previous, reference, target) triple, so 3 slices; an LTUDA sample is one
slice (``ltuda`` also forwards two strongly augmented views of it and a teacher pass). Writes
``training_throughput.csv``.

Run from the repository root::

    python -m benchmarks.oneseg_cost
    python -m benchmarks.oneseg_cost --sizes 200x140x88,512x512x300 --methods oneseg
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _plot
from benchmarks._tables import write_csv

WORKER = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from sparseseg import oneseg
from sparseseg.oneseg.baselines import MODEL_METHODS
method, folder = sys.argv[1], sys.argv[2]
start = time.monotonic()
oneseg.propagate(model=f"{folder}/model" if method in MODEL_METHODS else None,
                 image=f"{folder}/image.nii.gz", annotation=f"{folder}/ann.nii.gz",
                 output=f"{folder}/out.nii.gz", method=method, device="cpu")
seconds = time.monotonic() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak}))
"""


def write_case(folder: Path, shape: tuple[int, int, int]) -> None:
    """A smooth random volume and a one-slice disc annotation in its middle."""
    import numpy as np
    from scipy import ndimage

    from sparseseg.io import write_volume
    from sparseseg.io.volume import Volume

    rng = np.random.default_rng(0)
    coarse = rng.normal(size=tuple(-(-s // 8) + 1 for s in shape))
    image = ndimage.zoom(coarse, 8, order=1)[: shape[0], : shape[1], : shape[2]]
    image = np.ascontiguousarray(image, dtype=np.float32)
    ii, jj = np.ogrid[: shape[0], : shape[1]]
    disc = (ii - shape[0] / 2) ** 2 + (jj - shape[1] / 2) ** 2 <= (min(shape[:2]) / 5) ** 2
    ann = np.zeros(shape, np.uint8)
    ann[:, :, shape[2] // 2] = disc
    ref = Volume(image, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    write_volume(folder / "image.nii.gz", image, ref)
    write_volume(folder / "ann.nii.gz", ann, ref)


def oneseg_throughput(steps: int, size: int, seed: int, precision: str) -> dict:
    """Time ``steps`` OneSeg training steps (after 2 warm-up steps) on three phantoms."""
    import torch

    from sparseseg.data.phantom import make_phantom
    from sparseseg.oneseg.network import NetworkConfig
    from sparseseg.oneseg.preprocess import volume_to_slices
    from sparseseg.oneseg.training import OneSegTrainer, TrainConfig

    # Phantoms at the training size: the slices are resized to it anyway.
    volumes = [volume_to_slices(make_phantom(shape=(size, size, 48), seed=seed + i)[0].array,
                                size=size) for i in range(3)]
    warm = 2
    config = TrainConfig(epochs=1, pairs_per_epoch=8 * (steps + warm), batch_size=8, size=size,
                         seed=seed, precision=precision)
    trainer = OneSegTrainer(volumes, network=NetworkConfig(), config=config,
                            device=torch.device("cpu"))
    stamps: list[float] = []
    trainer.fit(lambda state: stamps.append(time.monotonic()))
    seconds = stamps[-1] - stamps[warm - 1]
    n = len(stamps) - warm
    return {"trainer": "oneseg", "method": "oneseg", "precision": precision, "batch": 8,
            "slices_per_sample": 3,
            "steps": n, "seconds": seconds, "steps_per_s": n / seconds,
            "slices_per_s": n * 8 * 3 / seconds}


def ltuda_throughput(steps: int, size: int, seed: int, folder: Path,
                     precision: str) -> list[dict]:
    """Time ``steps`` LTUDA training steps per method (after 2 warm-up steps) on phantoms."""
    import torch

    from sparseseg.data import PHANTOM_LABELS, make_phantom_dataset
    from sparseseg.ltuda import DatasetSpec
    from sparseseg.ltuda.data import load_cases
    from sparseseg.ltuda.model import LTUDAModel
    from sparseseg.ltuda.network import default_depth
    from sparseseg.ltuda.trainer import TrainConfig, Trainer

    data = make_phantom_dataset(folder / "ltuda_phantoms", n_cases=3, shape=(size, size, 32),
                                seed=seed)
    organs = list(PHANTOM_LABELS)
    cases = load_cases([DatasetSpec(data, {o: [v] for o, v in PHANTOM_LABELS.items()})],
                       organs, size)
    rows = []
    for method, stage in (("partial", 1), ("ltuda", 1), ("ltuda", 2)):
        torch.manual_seed(seed)
        model = LTUDAModel(n_organs=len(organs), base_channels=16, depth=default_depth(size))
        # No warm-up: its steps are partial-label steps, which would time cda/ltuda as partial.
        settings = TrainConfig(method=method, batch_size=4, seed=seed, warmup_fraction=0.0,
                                 precision=precision)
        trainer = Trainer(model, cases, [], settings, torch.device("cpu"))
        if stage == 2:
            trainer.start_stage2()
        warm = 2
        for _ in range(warm):
            trainer.train_step()
        start = time.monotonic()
        for _ in range(steps):
            trainer.train_step()
        seconds = time.monotonic() - start
        name = method if method == "partial" else f"ltuda stage {stage}"
        rows.append({"trainer": "ltuda", "method": name, "precision": precision,
                     "batch": 4, "slices_per_sample": 1,
                     "steps": steps, "seconds": seconds, "steps_per_s": steps / seconds,
                     "slices_per_s": steps * 4 / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x64x64,128x128x128,200x140x88,256x256x150,"
                        "512x512x300")
    parser.add_argument("--methods", default="oneseg,registration,copy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-registration-voxels", type=float, default=2e7,
                        help="skip registration above this many voxels (it takes minutes)")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--train-steps", type=int, default=20,
                        help="timed training steps per trainer (0: skip training throughput)")
    parser.add_argument("--train-size", type=int, default=128, help="training slice size")
    parser.add_argument("--train-precisions", default="fp32,bf16",
                        help="precisions timed (bf16 is skipped where the CPU lacks it)")
    args = parser.parse_args()
    from sparseseg.oneseg.model import OneSegModel
    from sparseseg.oneseg.network import OneSegNet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        OneSegModel(OneSegNet(), size=128).save(Path(tmp) / "model")
        for size in args.sizes.split(","):
            shape = tuple(int(v) for v in size.split("x"))
            voxels = shape[0] * shape[1] * shape[2]
            write_case(Path(tmp), shape)
            for method in args.methods.split(","):
                if method == "registration" and voxels > args.max_registration_voxels:
                    continue
                proc = subprocess.run(
                    [sys.executable, "-c", WORKER, method, tmp, str(args.threads)],
                    capture_output=True, text=True, check=True,
                )
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append({"size": size, "method": method, **result})
                print(f"{size:>12} {method:<13} {result['seconds']:7.2f} s "
                      f"{result['peak_mb']:8.0f} MB", flush=True)
    with open(out / "oneseg_cost.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["size", "method", "seconds", "peak_mb"])
        writer.writeheader()
        writer.writerows(rows)
    voxels = {r["size"]: math.prod(int(v) for v in r["size"].split("x")) for r in rows}
    series = {}
    for method in args.methods.split(","):
        sel = [r for r in rows if r["method"] == method]
        series[method] = ([voxels[r["size"]] for r in sel], [r["seconds"] for r in sel])
    chart = _plot.line_chart(series, title=f"Propagation time per volume ({args.threads} CPU "
                             "threads, reading and writing included)", xlabel="voxels",
                             ylabel="seconds", log_x=True, log_y=True)
    _plot.save(out / "oneseg_cost.png", chart)
    if args.train_steps > 0:
        import torch

        from sparseseg.errors import SparsesegError
        from sparseseg.precision import resolve_precision

        torch.set_num_threads(args.threads)
        precisions = []
        for name in args.train_precisions.split(","):
            try:
                resolve_precision(name, torch.device("cpu"))
                precisions.append(name)
            except SparsesegError as exc:
                print(f"skipping {name}: {exc}")
        train_rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in precisions:
                train_rows += [oneseg_throughput(args.train_steps, args.train_size, 0, name),
                               *ltuda_throughput(args.train_steps, args.train_size, 0,
                                                 Path(tmp) / name, name)]
        print(f"\ntraining throughput ({args.threads} threads, size {args.train_size}, "
              f"{args.train_steps} timed steps)")
        print(f"{'trainer':<8} {'method':<15} {'precision':<9} {'batch':>5} {'steps/s':>8} "
              f"{'slices/s':>9}")
        for r in train_rows:
            print(f"{r['trainer']:<8} {r['method']:<15} {r['precision']:<9} {r['batch']:>5} "
                  f"{r['steps_per_s']:8.2f} {r['slices_per_s']:9.1f}")
        write_csv(out / "training_throughput.csv", train_rows)


if __name__ == "__main__":
    main()
