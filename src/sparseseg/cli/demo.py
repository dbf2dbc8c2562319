"""``sparseseg demo``: OneSeg end to end on generated phantoms."""

from __future__ import annotations

import argparse

from sparseseg.cli.common import add_device_option, add_seed_option, quiet_parent


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = sub.add_parser(
        "demo",
        parents=[quiet_parent()],
        help="OneSeg end to end on generated phantoms (no downloads)",
        description="Train OneSeg on generated unlabeled phantoms, ask which slice of a new "
        "phantom to annotate, annotate the slice showing all four organs, propagate its "
        "label, and write volumes, overlay.png and metrics.",
    )
    parser.add_argument(
        "-o", "--output", default="sparseseg-demo", help="output folder (default: ./sparseseg-demo)"
    )
    parser.add_argument(
        "--max-time",
        type=float,
        default=4.0,
        metavar="MINUTES",
        help="training time limit (default: 4)",
    )
    add_device_option(parser)
    add_seed_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where its outputs are."""
    from sparseseg.demo import run_demo

    result = run_demo(
        output=args.output,
        max_time=args.max_time,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
    )
    print((result.folder / "metrics.txt").read_text(), end="")
    print(f"slice annotated: {result.slice_index} (every organ visible; OneSeg's screening "
          f"suggested {result.suggested}); {result.seconds:.0f} s")
    print(
        f"outputs in {result.folder.resolve()}: image.nii.gz, annotation.nii.gz, "
        "propagated.nii.gz, truth.nii.gz, overlay.png, metrics.txt, model/"
    )
    return 0
