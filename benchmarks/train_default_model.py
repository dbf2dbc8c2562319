"""Train the default OneSeg model shipped in the package (``sparseseg/oneseg/default_model``).

The model is trained self-supervised (OneSeg's reconstruction loss, no labels) on every image
of every dataset under ``--data`` (by default ``../shared/data``: LeftAtrium LGE-MRI, ACDC
cine-MRI and TotalSegmentator's CT and MR test volumes), so that it has seen both modalities.
``sparseseg oneseg select/propagate/suggest`` use it when no ``-m`` is given.

The slices are prepared once (intensity normalised, resized, stored as 8-bit in a compressed
``.npz``, about 40 MB for the data above) so that a machine without the data, or without
SimpleITK, can train from the file alone (``--cache``). The model card (``MODEL_CARD.md``
beside the weights) records the command, the data and their licences.

Usage::

    python -m benchmarks.train_default_model                       # prepare + train (CPU: hours)
    python -m benchmarks.train_default_model --prepare-only --cache slices.npz
    python -m benchmarks.train_default_model --cache slices.npz --device cuda --max-time 6
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks._oneseg_common import add_training_options, train_configs
from sparseseg.device import resolve_device
from sparseseg.oneseg.model import PROPAGATION_TEMPERATURE, OneSegModel
from sparseseg.oneseg.training import OneSegTrainer, TrainState

log = logging.getLogger("train_default_model")

DEFAULT_OUTPUT = Path("src/sparseseg/oneseg/default_model")


def prepare(data: Path, size: int) -> tuple[list[np.ndarray], list[dict]]:
    """Every image of every dataset folder under ``data`` as 8-bit ``(N, S, S)`` slices.

    Returns:
        The slice stacks and one record per volume (dataset, case, slices, file hash).
    """
    from sparseseg.io import SLICE_AXIS, find_cases, read_volume
    from sparseseg.oneseg.preprocess import volume_to_slices

    folders = sorted(p for p in data.iterdir() if (p / "imagesTr").is_dir())
    if not folders:
        raise SystemExit(f"{data}: no dataset folder (with imagesTr/) inside")
    stacks, records = [], []
    for folder in folders:
        for case in tqdm(find_cases(folder), desc=f"reading {folder.name}", unit="vol"):
            volume = read_volume(case.image)
            if volume.shape[SLICE_AXIS] < 2:
                continue
            slices = volume_to_slices(volume.array, size=size)[:, 0].numpy()
            stacks.append(np.round(slices * 255.0).astype(np.uint8))
            records.append({
                "dataset": folder.name,
                "case": case.name,
                "slices": int(len(slices)),
                "sha256": hashlib.sha256(Path(case.image).read_bytes()).hexdigest()[:16],
            })
    return stacks, records


def save_cache(path: Path, stacks: list[np.ndarray], records: list[dict], size: int) -> None:
    """Write the prepared slices (compressed ``.npz``; no pickled objects inside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"size": size, "volumes": records})
    arrays = {f"v{i:04d}": s for i, s in enumerate(stacks)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, meta=np.frombuffer(meta.encode(), np.uint8), **arrays)
    tmp.replace(path)


def load_cache(path: Path) -> tuple[list[np.ndarray], list[dict], int]:
    """Read what :func:`save_cache` wrote (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        stacks = [npz[f"v{i:04d}"] for i in range(len(meta["volumes"]))]
    return stacks, meta["volumes"], int(meta["size"])


def summary(records: list[dict]) -> dict[str, dict[str, int]]:
    """Volumes and slices per dataset."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        d = out.setdefault(r["dataset"], {"volumes": 0, "slices": 0})
        d["volumes"] += 1
        d["slices"] += r["slices"]
    return out


def parse_repeat(items: list[str], datasets: set[str]) -> dict[str, int]:
    """``["AbdomenTS=5"]`` -> ``{"AbdomenTS": 5}`` (names checked against ``datasets``)."""
    out = {}
    for item in items:
        name, _, count = item.partition("=")
        if name not in datasets or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--repeat {item}: expected DATASET=N with DATASET one of "
                             f"{sorted(datasets)} and N >= 1")
        out[name] = int(count)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="folder of dataset folders")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="model folder to write")
    parser.add_argument("--cache", default=None,
                        help="prepared slices (.npz): read if it exists, else written")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write --cache and stop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--repeat", action="append", default=[], metavar="DATASET=N",
                        help="draw a dataset's volumes N times as often (training samples "
                             "pick a volume at random; a dataset of few volumes is otherwise "
                             "rarely seen)")
    add_training_options(parser, max_time=0.0, epochs=6, pairs_per_epoch=4800)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        stacks, records, size = load_cache(cache)
        if size != args.size:
            raise SystemExit(f"{cache}: slices prepared at {size}, not --size {args.size}")
        log.info("read %d prepared volumes from %s", len(stacks), cache)
    else:
        stacks, records = prepare(Path(args.data), args.size)
        if cache is not None:
            save_cache(cache, stacks, records, args.size)
            log.info("prepared slices written to %s (%.1f MB)", cache,
                     cache.stat().st_size / 1e6)
    if args.prepare_only:
        return
    datasets = summary(records)
    log.info("datasets: %s", json.dumps(datasets))

    device = resolve_device(args.device)
    network, training = train_configs(args)
    repeat = parse_repeat(args.repeat, set(datasets))
    volumes = [torch.from_numpy(s).float().div_(255.0)[:, None]
               for s, r in zip(stacks, records, strict=True)
               for _ in range(repeat.get(r["dataset"], 1))]
    trainer = OneSegTrainer(volumes, network=network, config=training, device=device)
    bar = tqdm(total=trainer.steps_per_epoch * training.epochs, unit="step", desc="training",
               mininterval=5.0)

    def report(state: TrainState) -> None:
        bar.update(1)
        bar.set_postfix(epoch=f"{state.epoch}/{training.epochs}", loss=f"{state.loss:.4f}",
                        refresh=False)

    start = time.monotonic()
    net = trainer.fit(report)
    bar.close()
    seconds = time.monotonic() - start
    extra = {
        "training": trainer.record(),
        "n_volumes": len(volumes),
        "propagation_temperature": PROPAGATION_TEMPERATURE,
        "default_model": {
            "datasets": datasets,
            "repeat": repeat,
            "steps": trainer.step,
            "seconds": round(seconds, 1),
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "data_hash": hashlib.sha256(
                json.dumps(records, sort_keys=True).encode()).hexdigest()[:16],
        },
    }
    path = OneSegModel(net.cpu(), size=args.size, device="cpu", extra=extra).save(args.output)
    log.info("trained %d steps in %.0f s; model saved to %s", trainer.step, seconds, path)


if __name__ == "__main__":
    main()
