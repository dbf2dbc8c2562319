"""Cost of propagation: seconds per volume and peak memory, by volume size and method.

Each measurement runs in a fresh subprocess (so peak resident memory is that of one
propagation, reading and writing included) on a generated smooth random volume of the given
size, with an untrained network of the default architecture (cost does not depend on the
weights). Prints a table and writes ``oneseg_cost.csv``.

Run from the repository root::

    python -m benchmarks.oneseg_cost
    python -m benchmarks.oneseg_cost --sizes 200x140x88,512x512x300 --methods oneseg
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from sparseseg import oneseg
method, folder = sys.argv[1], sys.argv[2]
start = time.monotonic()
oneseg.propagate(model=f"{folder}/model" if method == "oneseg" else None,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x64x64,128x128x128,200x140x88,256x256x150,"
                        "512x512x300")
    parser.add_argument("--methods", default="oneseg,registration,copy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-registration-voxels", type=float, default=2e7,
                        help="skip registration above this many voxels (it takes minutes)")
    parser.add_argument("--out", default="benchmarks/results")
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


if __name__ == "__main__":
    main()
