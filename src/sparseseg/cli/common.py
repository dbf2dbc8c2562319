"""Helpers shared by the CLI commands: options, device choice, progress, logging."""

from __future__ import annotations

import argparse
import logging


def quiet_parent() -> argparse.ArgumentParser:
    """A parent parser giving every sub-command ``-q/--quiet``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
        help="no progress bars or info messages",
    )
    return parent


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--device auto|cpu|cuda`` (auto: CUDA when available)."""
    parser.add_argument(
        "--device",
        default="auto",
        help="where to compute: auto (CUDA if available), cpu, cuda, or cuda:N (default: auto)",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision auto|fp32|bf16`` (training arithmetic)."""
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto",
        help="training arithmetic: bf16 mixed precision or fp32 (default: auto = bf16 on GPUs "
        "that have it and on CPUs with AMX, about 1.5x faster there; fp32 elsewhere)",
    )


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--checkpoint-every MINUTES`` and ``--resume`` (both trainers)."""
    parser.add_argument(
        "--checkpoint-every", type=float, default=5.0, metavar="MINUTES",
        help="save a resumable checkpoint (MODEL_DIR/resume.safetensors) every MINUTES of "
        "training and at the end (default: 5; 0: never)",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from MODEL_DIR/resume.safetensors (same settings and data; starts from "
        "scratch when there is none)",
    )


def add_seed_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--seed N`` for reproducible runs."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def setup_logging(quiet: bool) -> None:
    """Log INFO to stderr unless quiet (then warnings only)."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        force=True,
    )


def comma_ints(text: str) -> list[int]:
    """Parse ``"1,2,3"`` into ``[1, 2, 3]`` for argparse."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
