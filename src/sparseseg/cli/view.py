"""``sparseseg view IMAGE``: annotate in napari (needs ``sparseseg[napari]``)."""

from __future__ import annotations

import argparse
import importlib.util
import math

from sparseseg.cli.common import add_device_option, quiet_parent
from sparseseg.cli.oneseg import HYBRID_WEIGHT, METHOD_CHOICES
from sparseseg.errors import InputError, SparsesegError

INSTALL_HINT = 'napari is not installed; install it with: pip install "sparseseg[napari]"'


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``view`` command."""
    parser = sub.add_parser(
        "view",
        parents=[quiet_parent()],
        help="annotate in napari: paint a slice, propagate, correct, save",
        description="Open IMAGE in napari with the OneSeg annotation widget: paint one or more "
        "slices, Propagate, correct, Save. Needs the napari extra: "
        'pip install "sparseseg[napari]".',
    )
    parser.add_argument("image", metavar="IMAGE", help="volume file or DICOM folder")
    parser.add_argument(
        "--labels", metavar="LABELS", default=None,
        help="label volume on the image's grid to start from (default: the image's autosave "
        "when there is one)",
    )
    parser.add_argument(
        "-m", "--model", metavar="MODEL_DIR", default=None,
        help="OneSeg model folder (default: the model shipped with sparseseg)",
    )
    parser.add_argument(
        "--method", choices=METHOD_CHOICES, default=None,
        help="propagation method (default: oneseg with a model, else registration)",
    )
    parser.add_argument(
        "--hybrid-weight", type=float, default=HYBRID_WEIGHT, metavar="W",
        help="the widget's OneSeg share for --method hybrid, 0..1 (default "
        f"{HYBRID_WEIGHT:g}; changeable in the widget)",
    )
    parser.add_argument(
        "--refiner", metavar="REFINER_DIR", default=None,
        help="refinement network saved by 'sparseseg oneseg refine --save-model': Propagate "
        "refines with it, Suggest asks it (changeable in the widget)",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUTPUT", default=None,
        help="where Save writes the labels (.nii.gz; default: asked on Save)",
    )
    add_device_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the viewer and run napari's event loop until it is closed."""
    if not (math.isfinite(args.hybrid_weight) and 0.0 <= args.hybrid_weight <= 1.0):
        raise InputError(f"--hybrid-weight needs a number between 0 and 1, got "
                         f"{args.hybrid_weight}")
    if importlib.util.find_spec("napari") is None:
        raise SparsesegError(INSTALL_HINT)
    try:
        import napari

        from sparseseg.napari.session import open_viewer
    except ImportError as exc:
        raise SparsesegError(f"{INSTALL_HINT} ({exc})") from None
    open_viewer(args.image, labels=args.labels, model=args.model, method=args.method,
                output=args.output, device=args.device, hybrid_weight=args.hybrid_weight,
                refiner=args.refiner)
    napari.run()
    return 0
