"""A population prior for the annotation loop: propagate every volume, train a 2D network on
the propagated labels, and fuse it back into each volume's propagation (LeftAtrium).

The setting is the joined one (annotate a few slices of *every* volume of a dataset, not of
one): an annotator draws ``n`` slices of each LeftAtrium volume, evenly spaced
(``annotation_curve``'s uniform rule) or, with ``--strategy suggest``, as the annotation loop
draws them (the middle of the extent, then each slice ``oneseg suggest`` proposes). The
slices of each of the first ``--train-cases`` volumes are propagated with OneSeg (the
default model unless ``--model``) and the refinement network of
:mod:`sparseseg.oneseg.refinement` is trained on all those propagated labels (``--steps``).
Each held-out volume's slices are propagated as usual and refined: the network, fine-tuned
on that volume's annotated slices, is fused with its propagation. By default the held-out
volumes' own propagations are not trained on (the stricter protocol); ``--transductive``
trains on them too, as ``sparseseg oneseg refine`` does with every case it refines.
``--train-slices 0`` annotates the training volumes with as many slices as the held-out
ones (one network per count in ``--slices``).

Prints, for each number of slices in ``--slices``, the mean 3D Dice of the propagation alone,
of the fine-tuned network alone (annotated slices put back, largest component) and of the
refinement (for each smoothing in ``--sigma``), and writes ``population_prior.csv`` (one
row per held-out case and slice count) to ``--out``.

Run from the repository root (about 20 minutes on 2 cores)::

    python -m benchmarks.population_prior
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._oneseg_common import format_table, leftatrium_split, start_run
from benchmarks._tables import write_csv
from benchmarks.annotation_curve import _annotation, uniform_slices
from sparseseg import oneseg
from sparseseg.io import SLICE_AXIS, Case, read_label, read_volume
from sparseseg.metrics import dice
from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.cleanup import largest_component
from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.refinement import (
    RefineConfig,
    SliceStack,
    finetune_refiner,
    fused_labels,
    save_refiner,
    train_rounds,
)

CLASSES = np.array([0, 1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/LeftAtrium")
    p.add_argument("--model", default=None, help="OneSeg model folder (default: shipped)")
    p.add_argument("--train-cases", type=int, default=30)
    p.add_argument("--limit", type=int, default=10, help="held-out cases")
    p.add_argument("--train-slices", type=int, default=2,
                   help="annotated slices per training volume (0: as the held-out ones)")
    p.add_argument("--transductive", action="store_true",
                   help="also train on the held-out volumes' propagations")
    p.add_argument("--slices", default="2,3", help="annotated slices per held-out volume")
    p.add_argument("--strategy", choices=("uniform", "suggest", "refined"), default="uniform",
                   help="which slices are annotated (suggest: the middle, then suggest's; "
                        "refined: as suggest, but a slice added after a network was trained "
                        "on one fewer is chosen by that network's doubt, suggest --refiner)")
    p.add_argument("--steps", type=int, default=RefineConfig.steps)
    p.add_argument("--rounds", type=int, default=RefineConfig.rounds,
                   help="training rounds (later ones on the refined labels)")
    p.add_argument("--finetune-steps", type=int, default=RefineConfig.finetune_steps)
    p.add_argument("--sigma", default=str(RefineConfig.sigma),
                   help="fusion smoothing(s), comma-separated")
    p.add_argument("--propagation-weight", type=float,
                   default=RefineConfig.propagation_weight,
                   help="the fusion's weight of the propagated labels (the table's refined "
                        "columns, and later rounds' relabeling of the training volumes)")
    p.add_argument("--z-sigma", type=float, default=RefineConfig.z_sigma,
                   help="across-slice smoothing of the network in the fusion (slices)")
    p.add_argument("--size", type=int, default=RefineConfig.size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default="", help="suffix of the CSV's name")
    p.add_argument("--save-network", metavar="DIR", default=None,
                   help="also write each trained network to DIR/slicesN (a refiner folder)")
    p.add_argument("--save-probabilities", default=None, metavar="DIR",
                   help="also write each held-out case's network probabilities, propagation, "
                        "truth and annotated slices to DIR/CASE_nN.npz (to study the fusion)")
    return p.parse_args(argv)


class SliceChooser:
    """The annotated slices of a case: evenly spaced, or the annotation loop's suggestions.

    Suggestions are nested (the loop's first ``n`` slices are its first ``n - 1`` and one
    more) and kept per case, so asking for 3 after 2 costs one more ``suggest``.
    """

    def __init__(self, strategy: str, model: OneSegModel) -> None:
        self.strategy = strategy
        self.model = model
        self.order: dict[str, list[int]] = {}
        #: Saved refinement networks by the number of slices they were trained with
        #: (strategy ``refined``).
        self.refiners: dict[int, Path] = {}

    def __call__(self, case: Case, vol, mask: np.ndarray, n: int) -> list[int]:
        truth = np.moveaxis(mask, SLICE_AXIS, 0)
        zs = np.flatnonzero(truth.reshape(len(truth), -1).any(1))
        if self.strategy == "uniform":
            return uniform_slices(int(zs[0]), int(zs[-1]), n)
        order = self.order.setdefault(case.name, uniform_slices(int(zs[0]), int(zs[-1]), 1))
        while len(order) < n:
            refiner = self.refiners.get(len(order)) if self.strategy == "refined" else None
            found = oneseg.suggest(model=self.model, image=vol,
                                   annotation=_annotation(mask, order), device="cpu",
                                   refiner=refiner)
            order.append(int(found.slice))
        return sorted(order[:n])


def load_case(case: Case, n: int, choose: SliceChooser) -> tuple:
    """Image volume, its mask, slice-first truth, and ``n`` annotated slices."""
    vol = read_volume(case.image)
    mask = read_label(case.label).array > 0
    truth = np.moveaxis(mask, SLICE_AXIS, 0)
    return vol, mask, truth, choose(case, vol, mask, n)


def propagated(model: OneSegModel, vol, mask: np.ndarray, ann: SliceAnnotation) -> np.ndarray:
    """OneSeg's propagation of ``ann``, slice-first, 0/1."""
    out = oneseg.propagate(model=model, image=vol, annotation=ann, device="cpu").array > 0
    return np.moveaxis(out, SLICE_AXIS, 0).astype(np.uint8)


def train_network(config: RefineConfig, model: OneSegModel, choose: SliceChooser,
                  cases: list[Case], n: int) -> torch.nn.Module:
    """Propagate ``n`` slices of each case and train the refinement network on them."""
    stacks, props, anns, scores = [], [], [], []
    for case in cases:
        vol, mask, truth, slices = load_case(case, n, choose)
        ann = _annotation(mask, slices)
        prop = propagated(model, vol, mask, ann)
        scores.append(float(dice(prop, truth)))
        stacks.append(SliceStack(np.moveaxis(vol.array, SLICE_AXIS, 0), size=config.size))
        props.append(prop)
        anns.append(ann)
    logging.info("propagated %d training volumes from %d slices: mean Dice %.3f", len(cases),
                 n, np.mean(scores))
    start = time.monotonic()
    net = train_rounds(stacks, props, anns, CLASSES, config=config)
    logging.info("trained %d x %d steps in %.0f s", config.rounds, config.steps,
                 time.monotonic() - start)
    return net


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0."""
    args = parse_args(argv)
    out = start_run(args)
    sigmas = [float(v) for v in args.sigma.split(",")]
    config = RefineConfig(steps=args.steps, rounds=args.rounds,
                          finetune_steps=args.finetune_steps,
                          propagation_weight=args.propagation_weight, z_sigma=args.z_sigma,
                          sigma=sigmas[0], size=args.size, seed=args.seed)
    model = OneSegModel.load(args.model or oneseg.default_model_path())
    train, held_out = leftatrium_split(args.data, args.train_cases, args.limit)
    choose = SliceChooser(args.strategy, model)
    networks: dict[int, torch.nn.Module] = {}
    rows = []
    for n in [int(s) for s in args.slices.split(",")]:
        train_n = args.train_slices or n
        if train_n not in networks:
            cases = train + held_out if args.transductive else train
            networks[train_n] = train_network(config, model, choose, cases, train_n)
            if args.save_network or args.strategy == "refined":
                folder = Path(args.save_network or out) / f"slices{train_n}"
                save_refiner(folder, networks[train_n], classes=CLASSES, size=config.size)
                choose.refiners[train_n] = folder
        net = networks[train_n]
        for case in held_out:
            vol, mask, truth, slices = load_case(case, n, choose)
            ann = _annotation(mask, slices)
            prop = propagated(model, vol, mask, ann)
            stack = SliceStack(np.moveaxis(vol.array, SLICE_AXIS, 0), size=config.size)
            row = {"case": case.name, "slices": n, "train_slices": train_n,
                   "strategy": args.strategy, "annotated": " ".join(map(str, slices)),
                   "propagation": float(dice(prop, truth))}
            start = time.monotonic()
            tuned = finetune_refiner(net, stack, stack.target(prop.astype(np.int64)), slices,
                                     config=config)
            tuning = time.monotonic() - start
            probs = np.concatenate([
                stack.probabilities(tuned, np.arange(i, min(len(stack), i + 16)),
                                    torch.device("cpu"))[:, 1]
                for i in range(0, len(stack), 16)])
            if args.save_probabilities:
                Path(args.save_probabilities).mkdir(parents=True, exist_ok=True)
                np.savez_compressed(Path(args.save_probabilities) / f"{case.name}_n{n}.npz",
                                    probabilities=probs.astype(np.float16), propagation=prop,
                                    truth=truth, slices=np.array(slices))
            alone = (probs > 0.5).astype(np.uint8)
            alone[slices] = truth[slices]
            row["network"] = float(dice(largest_component(alone), truth))
            for sigma in sigmas:  # what refine_volume does, the fine-tuning done once
                start = time.monotonic()
                refined = fused_labels(tuned, stack, prop, ann, CLASSES, sigma=sigma,
                                       weight=config.propagation_weight,
                                       z_sigma=config.z_sigma, batch_size=config.batch_size)
                row[f"refined_{sigma:g}"] = float(dice(refined, truth))
                row[f"seconds_{sigma:g}"] = tuning + time.monotonic() - start
            rows.append(row)
            logging.info("%s %d slices: %s", case.name, n, " ".join(
                f"{k} {v:.3f}" for k, v in row.items() if k in ("propagation", "network")
                or k.startswith("refined")))
    csv_path = write_csv(Path(out) / f"population_prior{args.tag}.csv", rows)
    keys = ["propagation", "network", *[f"refined_{s:g}" for s in sigmas]]
    table = [{"slices": n, **{k: float(np.mean([r[k] for r in rows if r["slices"] == n]))
                              for k in keys}}
             for n in sorted({r["slices"] for r in rows})]
    print(f"\nLeftAtrium, {len(held_out)} held-out cases, {args.strategy} slices; "
          f"refinement network trained {config.rounds} x {config.steps} steps on "
          f"{len(train)} other volumes"
          f"{' and the held-out ones' if args.transductive else ''}, propagated from "
          f"{args.train_slices or 'as many'} slices, fine-tuned {config.finetune_steps} "
          f"steps per volume; refined: propagation weight {config.propagation_weight:g}, "
          f"z-sigma {config.z_sigma:g}")
    columns = [("slices", "annotated slices", "d"), ("propagation", "OneSeg", ".3f"),
               ("network", "network", ".3f")]
    columns += [(f"refined_{s:g}", f"refined (sigma {s:g})", ".3f") for s in sigmas]
    print(format_table(table, columns))
    print(f"\nwrote {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
