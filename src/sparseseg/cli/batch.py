"""Options and exit codes shared by the batch commands (``oneseg propagate``, ``ltuda predict``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from sparseseg.errors import SparsesegError

EXIT_CODES = (
    "exit status: 0 every case written (or skipped with --continue); 1 a batch finished but "
    "some cases failed (each is reported on its own line, the others are written); 2 bad "
    "arguments or an error that stops the whole run (missing or corrupt single input, "
    "unusable model, output folder not writable, disk full), reported on one line."
)


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--num-parts``, ``--part-id`` and ``--continue``, and the exit codes to the help."""
    group = parser.add_argument_group(
        "batch runs (folder inputs)",
        "Split the cases across machines or job-array tasks, resume interrupted runs. "
        "Workers sharing an output folder claim cases with CASE.nii.gz.lock files, so "
        "concurrent runs with --continue split the cases instead of repeating them.",
    )
    group.add_argument(
        "--num-parts", type=int, default=1, metavar="P",
        help="split the cases (sorted by name) into P parts (default: 1)",
    )
    group.add_argument(
        "--part-id", type=int, default=0, metavar="I",
        help="process part I (0-based, 0 <= I < P): cases I, I+P, I+2P, ... (default: 0)",
    )
    group.add_argument(
        "--continue", dest="skip_existing", action="store_true",
        help="skip cases whose output OUTPUT/CASE.nii.gz already exists",
    )
    parser.epilog = EXIT_CODES


def batch_options(args: argparse.Namespace) -> dict:
    """The API keyword arguments of the batch options."""
    return {"num_parts": args.num_parts, "part_id": args.part_id,
            "skip_existing": args.skip_existing}


def refuse_batch_options(args: argparse.Namespace, hint: str) -> None:
    """Refuse batch options on a single-file run.

    Raises:
        SparsesegError: One of ``--num-parts``, ``--part-id``, ``--continue`` was given.
    """
    if args.num_parts != 1 or args.part_id != 0 or args.skip_existing:
        raise SparsesegError(f"--num-parts, --part-id and --continue need a batch run ({hint})")


def run_batch_command(call: Callable[[], object]) -> int:
    """Run a batch API call; exit code 1 with one line when some of its cases failed."""
    from sparseseg.batch import BatchError

    try:
        call()
    except BatchError as exc:
        print(f"sparseseg: error: {exc}", file=sys.stderr)
        return 1
    return 0
