"""``sparseseg ltuda``: train one multi-organ model from partially labeled datasets, predict."""

from __future__ import annotations

import argparse

from sparseseg.cli.batch import add_batch_options, batch_options, run_batch_command
from sparseseg.cli.common import (
    add_checkpoint_options,
    add_device_option,
    add_precision_option,
    add_seed_option,
    quiet_parent,
)

METHODS = ("partial", "cda", "ltuda")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ltuda train`` and ``ltuda predict`` to the top-level parser."""
    parser = subparsers.add_parser(
        "ltuda",
        help="multi-organ segmentation from partially labeled datasets (LTUDA)",
        description="Train one multi-organ 2D model from datasets that each label some "
        "organs (LTUDA), and predict with it.",
    )
    sub = parser.add_subparsers(dest="ltuda_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    train = sub.add_parser(
        "train",
        parents=[quiet_parent()],
        help="train a model",
        description="Train on one or more nnU-Net dataset folders; each names the organs it "
        "labels as ORGAN=VALUE[,VALUE...]. Zeros in a dataset mean 'unknown' for the organs "
        "it does not name.",
    )
    train.add_argument("-o", "--output", required=True, help="model folder to write")
    train.add_argument(
        "--dataset",
        action="append",
        nargs="+",
        required=True,
        metavar="PATH ORGAN=V",
        help="dataset folder followed by ORGAN=V[,V...] for each organ it labels "
        "(repeat --dataset for every dataset)",
    )
    train.add_argument(
        "--method", choices=METHODS, default="ltuda",
        help="partial: partial-label loss only; cda: + mean teacher and cross-set CutMix; "
        "ltuda: + prototype alignment (default: ltuda)",
    )
    train.add_argument("--epochs", type=int, default=None, help="epochs (default: API default)")
    train.add_argument(
        "--max-time", type=float, default=None, metavar="MINUTES",
        help="stop after this many minutes and save the best model so far",
    )
    train.add_argument("--size", type=int, default=None, help="slice size for the network")
    train.add_argument("--base-channels", type=int, default=None, help="U-Net base width")
    train.add_argument(
        "--val-fraction", type=float, default=None,
        help="fraction of each training dataset's cases held out for model selection",
    )
    train.add_argument(
        "--val-group", metavar="REGEX", default=None,
        help="regular expression naming a case's patient in its name (first match, or "
        "first group), e.g. 'patient\\d+': a patient's cases are held out together, so "
        "validation scores patients the network did not train on (default: case by case)",
    )
    train.add_argument(
        "--loss", choices=("bce", "bce+dice"), default="bce",
        help="supervised loss: the paper's partial BCE, or BCE plus a partial soft Dice "
        "(default: bce)",
    )
    train.add_argument(
        "--batch-size", type=int, default=None,
        help="slices per step and process (default: 4; with torchrun the effective batch is "
        "N times larger)",
    )
    train.add_argument(
        "--strong-views", type=int, default=None,
        help="strong CutMix views per batch for the student in cda/ltuda (default: 2, the "
        "paper's; 1 halves their cost)",
    )
    train.add_argument(
        "--proto-pixels", type=int, default=None,
        help="random pixels per class and view for the stage-2 prototype losses (default: "
        "2048; 0: every pixel, as in the paper)",
    )
    train.add_argument(
        "--ema", type=float, default=None,
        help="final decay of the mean teacher's moving average in cda/ltuda (default: 0.999, "
        "the paper's; smaller follows the student faster in short runs)",
    )
    train.add_argument(
        "--warmup-fraction", type=float, default=None, metavar="F",
        help="fraction of a cda/ltuda run (epochs or time) trained on partial labels alone "
        "before the mean teacher's pseudo-labels supervise (default: 0.3, the paper's; 0.5 "
        "measured best in short CPU runs, see docs/benchmarks.md)",
    )
    train.add_argument(
        "--stage1-fraction", type=float, default=None, metavar="F",
        help="fraction of an ltuda run before stage 2 (prototype alignment) starts "
        "(default: 0.5; 1: stage 1 only)",
    )
    train.add_argument(
        "--no-weak-view-loss", dest="weak_view_loss", action="store_false",
        help="after the warm-up, train the student on the strong CutMix views alone (they "
        "still carry every labeled pixel they hold): about 1.4 times the steps a minute",
    )
    train.add_argument(
        "--teacher-flip", action="store_true",
        help="cda/ltuda: pseudo-labels from the mean teacher's average over the view and its "
        "mirror image (one more teacher pass a step)",
    )
    train.add_argument(
        "--exclusion", action="store_true",
        help="organs exclude each other: a labeled organ's pixels also teach every other "
        "organ's channel 'absent', also those its dataset does not label",
    )
    train.add_argument(
        "--pseudo-confidence", type=float, default=None, metavar="P",
        help="supervise pseudo-labels only where the teacher's probability is >= P or "
        "<= 1-P for every unlabeled organ (default: 0, everywhere)",
    )
    train.add_argument(
        "--no-tone-augmentation", dest="tone_augmentation", action="store_false",
        help="no random gamma/contrast in the weak view (the paper's augmentation; by default "
        "they are on, so an organ learned from a few patients is found in other patients' "
        "images)",
    )
    add_checkpoint_options(train)
    add_device_option(train)
    add_precision_option(train)
    add_seed_option(train)
    train.set_defaults(func=_train)

    predict = sub.add_parser(
        "predict",
        parents=[quiet_parent()],
        help="segment images with a trained model",
        description="Segment an image, a folder of images, or a dataset folder. With an "
        "output folder, OUTPUT/CASE.nii.gz is written for each case, and a case that cannot "
        "be read is reported while the others are still written.",
    )
    predict.add_argument("-m", "--model", required=True, help="model folder")
    predict.add_argument("-i", "--input", required=True, help="image file or folder")
    predict.add_argument(
        "-o", "--output", required=True, help="output file (single input) or folder"
    )
    add_device_option(predict)
    add_batch_options(predict)
    predict.set_defaults(func=_predict)


def _train(args: argparse.Namespace) -> int:
    from sparseseg.ltuda.api import train
    from sparseseg.ltuda.spec import parse_dataset_args

    datasets = parse_dataset_args(args.dataset)
    options = {
        "epochs": args.epochs,
        "size": args.size,
        "base_channels": args.base_channels,
        "val_fraction": args.val_fraction,
        "val_group": args.val_group,
        "batch_size": args.batch_size,
        "strong_views": args.strong_views,
        "proto_pixels": args.proto_pixels,
        "ema": args.ema,
        "tone_augmentation": args.tone_augmentation,
        "warmup_fraction": args.warmup_fraction,
        "stage1_fraction": args.stage1_fraction,
        "weak_view_loss": args.weak_view_loss,
        "teacher_flip": args.teacher_flip,
        "exclusion": args.exclusion,
        "pseudo_confidence": args.pseudo_confidence,
    }
    train(
        output=args.output,
        datasets=datasets,
        method=args.method,
        loss=args.loss,
        max_time=args.max_time,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=not getattr(args, "quiet", False),
        **{k: v for k, v in options.items() if v is not None},
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sparseseg.ltuda.api import predict

    return run_batch_command(lambda: predict(
        model=args.model,
        inputs=args.input,
        output=args.output,
        device=args.device,
        progress=not getattr(args, "quiet", False),
        **batch_options(args),
    ))
