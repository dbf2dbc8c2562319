"""``sparseseg evaluate``: CHAOS metrics of predictions against references."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from sparseseg.cli.common import comma_ints, quiet_parent
from sparseseg.errors import SparsesegError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    parser = sub.add_parser(
        "evaluate",
        parents=[quiet_parent()],
        help="score predictions against references (DICE, RAVD, ASSD, MSSD)",
        description="Score a predicted label volume (or a folder of them) against the reference "
        "with the CHAOS challenge's metrics: DICE, RAVD (%%), ASSD and MSSD (mm). With --png, "
        "also draw the reference, the prediction and their disagreement on the slice of largest "
        "reference area, the slices where they disagree most and a coronal plane.",
    )
    parser.add_argument("-p", "--pred", required=True, help="predicted label volume or folder")
    parser.add_argument(
        "-t", "--truth", required=True, help="reference label volume, folder or dataset folder"
    )
    parser.add_argument(
        "--labels", type=comma_ints, default=None, help="label values to score, e.g. 1,2"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--png",
        default=None,
        metavar="PNG",
        help="also draw prediction vs reference on representative slices: a .png file, or in "
        "folder mode a folder getting one CASE.png per case",
    )
    parser.add_argument(
        "--image",
        default=None,
        metavar="IMAGE",
        help="image volume (folder mode: image folder or dataset folder) drawn in grey under "
        "the --png picture",
    )
    parser.set_defaults(func=run)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def format_table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    """Plain-text table of (case, label, metrics) rows."""
    header = f"{'case':<24} {'label':>5} {'DICE':>7} {'RAVD %':>8} {'ASSD mm':>8} {'MSSD mm':>8}"
    lines = [header, "-" * len(header)]
    for case, label, m in rows:
        lines.append(
            f"{case:<24} {label:>5} {m['dice']:7.4f} {m['ravd']:8.2f} "
            f"{m['assd']:8.3f} {m['mssd']:8.3f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate files or folders and print a table or JSON."""
    from sparseseg.evaluation import evaluate_files, evaluate_folders, summarise
    from sparseseg.metrics import METRIC_NAMES

    pred, truth = Path(args.pred), Path(args.truth)
    if args.image is not None and args.png is None:
        raise SparsesegError("--image is only used to draw the --png picture; add --png")
    if pred.is_dir():
        results = evaluate_folders(pred=pred, truth=truth, labels=args.labels, png=args.png,
                                   images=args.image)
        mean = summarise(results)
        if args.json:
            payload = {
                "cases": {
                    case: {str(v): {k: _number(m[k]) for k in METRIC_NAMES} for v, m in res.items()}
                    for case, res in results.items()
                },
                "mean": {str(v): {k: _number(m[k]) for k in METRIC_NAMES} for v, m in mean.items()},
            }
            print(json.dumps(payload, indent=2))
            return 0
        rows = [(case, str(v), m) for case, res in results.items() for v, m in res.items()]
        rows += [("mean", str(v), m) for v, m in mean.items()]
        print(format_table(rows))
        return 0
    scores = evaluate_files(pred=pred, truth=truth, labels=args.labels, png=args.png,
                            image=args.image)
    if args.json:
        payload = {str(v): {k: _number(m[k]) for k in METRIC_NAMES} for v, m in scores.items()}
        print(json.dumps(payload, indent=2))
    else:
        print(format_table([(pred.name, str(v), m) for v, m in scores.items()]))
    sys.stdout.flush()
    return 0
