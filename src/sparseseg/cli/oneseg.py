"""``sparseseg oneseg train|select|propagate|suggest|refine``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparseseg.cli.batch import (
    add_batch_options,
    batch_options,
    refuse_batch_options,
    run_batch_command,
)
from sparseseg.cli.common import (
    add_checkpoint_options,
    add_device_option,
    add_precision_option,
    add_seed_option,
    quiet_parent,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``oneseg`` command group."""
    parser = sub.add_parser(
        "oneseg",
        help="annotate one slice, get the whole 3D label",
        description="OneSeg: self-supervised training on unlabeled volumes, selection of the "
        "slice to annotate, and propagation of its label through the volume.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    quiet = quiet_parent()

    train = verbs.add_parser(
        "train",
        parents=[quiet],
        help="train on unlabeled volumes (labels are never read)",
        description="Train OneSeg self-supervised on unlabeled volumes and write a model folder "
        "(config.json + model.safetensors).",
    )
    train.add_argument(
        "-i",
        "--images",
        nargs="+",
        required=True,
        metavar="IMAGES",
        help="volume files, folders, or dataset folders (imagesTr/ only)",
    )
    train.add_argument(
        "-o", "--output", required=True, metavar="MODEL_DIR", help="model folder to write"
    )
    train.add_argument("--epochs", type=int, default=6, help="epochs (default: 6)")
    train.add_argument(
        "--max-time",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop after this many minutes and save a usable model",
    )
    train.add_argument(
        "--size",
        type=int,
        default=128,
        help="in-plane size slices are resized to (default: 128; paper: 256)",
    )
    train.add_argument(
        "--bottleneck",
        choices=("gabor", "edge", "intensity"),
        default="gabor",
        help="information bottleneck (default: gabor)",
    )
    train.add_argument(
        "--pairs",
        choices=("screened", "random"),
        default="screened",
        help="training pairs from the screening module or random (ablation)",
    )
    train.add_argument(
        "--local-chains", type=int, default=6, metavar="N",
        help="short chains of near-neighbour pairs (1-3 slices apart) added per volume and "
        "epoch (default: 6; 0: screened pairs only, as in the paper)",
    )
    train.add_argument(
        "--no-scheduled-sampling",
        dest="scheduled_sampling",
        action="store_false",
        help="ablation: train without scheduled sampling",
    )
    train.add_argument(
        "--no-cycle",
        dest="cycle",
        action="store_false",
        help="ablation: train without cycle consistency",
    )
    train.add_argument(
        "--batch-size", type=int, default=8,
        help="samples per step and process (default: 8; with torchrun the effective batch is "
        "N times larger)",
    )
    train.add_argument(
        "--pairs-per-epoch", type=int, default=1600,
        help="training samples per epoch, all processes together (default: 1600)",
    )
    add_checkpoint_options(train)
    add_device_option(train)
    add_precision_option(train)
    add_seed_option(train)
    train.set_defaults(func=run_train)

    select = verbs.add_parser(
        "select",
        parents=[quiet],
        help="which slice to annotate",
        description="Print the index (0-based, along the third voxel axis) of the slice most "
        "worth annotating.",
    )
    select.add_argument("-m", "--model", default=None, metavar="MODEL_DIR", help=MODEL_HELP)
    select.add_argument("-i", "--image", required=True, metavar="IMAGE")
    select.add_argument(
        "-a", "--annotation", default=None, nargs="+", metavar="ANNOTATION",
        help="a rough mark of the structure on any slice(s) (label volume, or 2D slices "
        "with --slice): the choice is then made among the slices it propagates to, "
        "compared inside its in-plane box (default: organ-blind, the whole volume)",
    )
    select.add_argument(
        "--slice", type=int, default=None, action="append", dest="slice_index",
        metavar="K", help="index of a 2D annotation's slice (once per 2D file)",
    )
    select.add_argument("--json", action="store_true", help='print {"slice": K}')
    select.add_argument(
        "--criterion",
        choices=("representative", "middle"),
        default="representative",
        help="representative: the paper's most representative slice (Eq. 5-7, default); "
        "middle: the middle one of the slices holding structure (the better start on "
        "LeftAtrium, see docs/benchmarks.md)",
    )
    add_device_option(select)
    select.set_defaults(func=run_select)

    prop = verbs.add_parser(
        "propagate",
        parents=[quiet],
        help="propagate annotated slices through the volume",
        description="Propagate the labels of one or more annotated slices through the volume "
        "and write the full label volume in the image's geometry. Between two annotated "
        "slices labels come from both and are joined (by default their union); beyond them "
        "they are propagated outwards. Annotated slices are kept exactly. Batch run: give "
        "folders to -i, -a and -o; each image IMAGES/CASE_0000.nii.gz (or CASE.nii.gz) is "
        "matched to ANNOTATIONS/CASE.nii.gz and OUTPUT/CASE.nii.gz is written.",
    )
    prop.add_argument("-m", "--model", default=None, metavar="MODEL_DIR", help=MODEL_HELP)
    prop.add_argument("--method", choices=METHOD_CHOICES, default="oneseg",
                      help="oneseg (default), hybrid (oneseg and registration mixed at every "
                      "step: best on abdominal CT/MR, 2-10x slower), registration (chained "
                      "demons), copy, or interpolation (morphological contour interpolation, "
                      "3D Slicer's 'fill between slices'; at least 2 annotated slices per "
                      "label)")
    prop.add_argument("-i", "--image", required=True, metavar="IMAGE",
                      help="volume file or DICOM folder; batch: folder of images or nnU-Net "
                      "dataset folder (imagesTr/)")
    _add_annotation_options(prop, batch=True)
    prop.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT",
        help="label volume to write (.nii.gz); batch: folder receiving CASE.nii.gz",
    )
    prop.add_argument(
        "--verify", action="store_true", help="per-step verification clean-up (Sli2Vol)"
    )
    _add_propagation_options(prop)
    prop.add_argument(
        "--preview",
        default=None,
        metavar="PNG",
        help="also write a preview picture of the result over the image (axial slices, "
        "coronal and sagittal planes) to this .png file",
    )
    prop.add_argument(
        "--refiner",
        default=None,
        metavar="REFINER_DIR",
        help="then refine the propagated labels with a network saved by 'oneseg refine "
        "--save-model' (seconds, no training; one image)",
    )
    add_device_option(prop)
    add_batch_options(prop)
    prop.set_defaults(func=run_propagate)

    sug = verbs.add_parser(
        "suggest",
        parents=[quiet],
        help="which slice to annotate next, given the slices annotated so far",
        description="Propagate the annotated slices and print the index (0-based, along the "
        "third voxel axis) of the slice where one more annotation would help most: the "
        "slice whose propagated outline is most uncertain.",
    )
    sug.add_argument("-m", "--model", default=None, metavar="MODEL_DIR", help=MODEL_HELP)
    sug.add_argument("-i", "--image", required=True, metavar="IMAGE")
    _add_annotation_options(sug, batch=False)
    sug.add_argument("--method", choices=PROPAGATOR_CHOICES, default="oneseg",
                     help="propagator whose result is scored (default: oneseg)")
    sug.add_argument("--criterion", choices=CRITERION_CHOICES, default="gain",
                     help="gain: the most doubt an annotation there is expected to remove "
                     "(default); uncertainty: the slice whose propagated outline is most "
                     "doubtful; distance: farthest from the annotated slices")
    sug.add_argument("--json", action="store_true",
                     help='print {"slice": K, "confidence": C, "annotated": [...]}')
    sug.add_argument("--confidence", default=None, metavar="FILE.csv",
                     help="also write per-slice confidence (one row per slice) to this CSV")
    sug.add_argument("--cross-check", default=None, choices=PROPAGATOR_CHOICES,
                     metavar="METHOD",
                     help="also propagate with METHOD (e.g. registration, about 15 s more on a "
                     "LeftAtrium volume) and count the pixels where the two disagree as doubt: "
                     "it sees a label that vanishes confidently")
    sug.add_argument("--refiner", default=None, metavar="REFINER_DIR",
                     help="score the slices by the doubt of a network saved by 'oneseg refine "
                     "--save-model' (for a dataset whose labels are refined) instead of the "
                     "propagation's own")
    _add_propagation_options(sug)
    add_device_option(sug)
    sug.set_defaults(func=run_suggest)

    ref = verbs.add_parser(
        "refine",
        parents=[quiet],
        help="refine a whole dataset's propagated labels with a network trained on all of them",
        description="When a few slices of every volume of a dataset are annotated and "
        "propagated (oneseg propagate with folders), train one 2D network on all the "
        "propagated labels, then refine each case: the network, fine-tuned on the case's "
        "annotated slices, is fused with its propagated labels (weighted by "
        "--propagation-weight: the network decides wherever it is fairly sure; where it is "
        "not, the propagation stands). Annotated slices are kept exactly. "
        "Each image IMAGES/CASE_0000.nii.gz (or CASE.nii.gz) is matched to "
        "ANNOTATIONS/CASE.nii.gz and LABELS/CASE.nii.gz; OUTPUT/CASE.nii.gz is written in the "
        "image's geometry. Every input is checked before training starts.",
    )
    ref.add_argument("-i", "--image", required=True, metavar="IMAGES",
                     help="folder of images or nnU-Net dataset folder (imagesTr/)")
    ref.add_argument("-a", "--annotation", required=True, metavar="ANNOTATIONS",
                     help="folder of annotation volumes CASE.nii.gz (the slices drawn)")
    ref.add_argument("-l", "--labels", required=True, metavar="LABELS",
                     help="folder of propagated label volumes CASE.nii.gz (oneseg propagate's "
                     "output, any method, or corrected by hand)")
    ref.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                     help="folder receiving the refined CASE.nii.gz (not an input folder)")
    ref.add_argument("--steps", type=int, default=REFINE_STEPS, metavar="N",
                     help=f"training steps of 16 slices (default {REFINE_STEPS}: 15 minutes "
                     "on 2 CPU cores, however many cases; a fixed number of steps makes runs "
                     "repeatable)")
    ref.add_argument("--max-time", type=float, default=None, metavar="MINUTES",
                     help="stop training after MINUTES even if the steps are not done (the "
                     "result then depends on the machine's speed)")
    ref.add_argument("--finetune-steps", type=int, default=50, metavar="N",
                     help="steps of fine-tuning on each case's annotated slices (default 50; "
                     "0: none)")
    ref.add_argument("--rounds", type=int, default=1, metavar="R",
                     help="training rounds (default 1); each further round trains the network "
                     "STEPS more on every case's refined labels")
    ref.add_argument("--propagation-weight", type=float, default=REFINE_PROPAGATION_WEIGHT,
                     metavar="W",
                     help="weight of the propagated labels beside the network in the fusion "
                     f"(default {REFINE_PROPAGATION_WEIGHT:g}; 1: equal, the propagation "
                     "stands unless the network is near-certain; 0: the network alone)")
    saved = ref.add_mutually_exclusive_group()
    saved.add_argument("--save-model", metavar="DIR", default=None,
                       help="also write the trained network to DIR (model.safetensors + "
                       "config.json), to refine later cases with -m")
    saved.add_argument("-m", "--model", metavar="DIR", default=None,
                       help="refine with a network saved by --save-model instead of training "
                       "one (seconds a case; --steps, --max-time and --rounds unused): e.g. "
                       "after slices were added to a few cases")
    add_seed_option(ref)
    add_device_option(ref)
    ref.set_defaults(func=run_refine)


MODEL_HELP = ("OneSeg model folder (default: the model shipped with sparseseg, trained "
              "self-supervised on MRI and CT; see its MODEL_CARD.md)")
# sparseseg.oneseg.baselines.METHODS / PROPAGATORS (not imported: torch; a test pins them)
METHOD_CHOICES = ("oneseg", "hybrid", "registration", "copy", "interpolation")
PROPAGATOR_CHOICES = ("oneseg", "hybrid", "registration", "copy")
CRITERION_CHOICES = ("gain", "uncertainty", "distance")
FUSION_CHOICES = ("union", "distance", "nearest")
INTENSITY_WEIGHT = 1.0  # sparseseg.oneseg.intensity.INTENSITY_WEIGHT (not imported: torch)
HYBRID_WEIGHT = 0.7  # sparseseg.oneseg.hybrid.HYBRID_WEIGHT (not imported: torch)
REFINE_STEPS = 4000  # sparseseg.oneseg.refinement.RefineConfig.steps (not imported: torch)
REFINE_PROPAGATION_WEIGHT = 0.25  # RefineConfig.propagation_weight (not imported: torch)


def _add_annotation_options(parser: argparse.ArgumentParser, *, batch: bool) -> None:
    parser.add_argument(
        "-a", "--annotation", required=True, nargs="+", metavar="ANNOTATION",
        help="label volume with one or more labeled slices, or 2D slices each with its "
        "--slice" + ("; batch: folder of such volumes named CASE.nii.gz" if batch else ""),
    )
    parser.add_argument(
        "--slice", type=int, default=None, action="append", dest="slice_index",
        metavar="K",
        help="index of a 2D annotation's slice (repeat once per 2D file, in order)",
    )
    parser.add_argument(
        "--empty-slice", type=int, default=None, action="append", dest="empty_slices",
        metavar="K",
        help="slice K holds no structure: every label stops there (e.g. past the organ's "
        "end, or where a leak was erased; a label file cannot say it); repeatable",
    )


def _add_propagation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fusion", choices=FUSION_CHOICES, default="union",
        help="how labels propagated from two annotated slices are joined between them: "
        "union (a pixel is labeled when either copy labels it; default), distance-weighted "
        "mean of probabilities, or the nearer slice's copy",
    )
    parser.add_argument(
        "--no-largest-component",
        dest="keep_largest",
        action="store_false",
        help="keep every 3D component, not just the largest per label",
    )
    parser.add_argument(
        "--no-anchor",
        dest="anchor",
        action="store_false",
        help="copy each slice from the last propagated slice only (the paper); by default "
        "every step also copies from the annotated slice",
    )
    parser.add_argument(
        "--intensity-weight", type=float, default=INTENSITY_WEIGHT, metavar="W",
        help="weight of the scan's own intensities, learned from the annotated slices (inside "
        "each outline against a band around it), in the final label decision; the "
        "propagated probabilities are smoothed a little in 3D first "
        f"(default {INTENSITY_WEIGHT:g}; 0: the propagation's most probable label, as "
        "before; not used by copy and interpolation)",
    )
    parser.add_argument(
        "--hybrid-weight", type=float, default=HYBRID_WEIGHT, metavar="W",
        help="with --method hybrid: OneSeg's share of the mix, 0..1, registration's the "
        f"rest (default {HYBRID_WEIGHT:g}, measured best on abdominal CT/MR; on ~10 thick "
        "cardiac short-axis slices use --method registration)",
    )
    parser.add_argument(
        "--adapt", type=float, default=0.0, metavar="SECONDS",
        help="first fine-tune a copy of the OneSeg model on this volume, for at most "
        "SECONDS (test-time adaptation; default 0: none; see docs/benchmarks.md for what it "
        "gains)",
    )
    parser.add_argument(
        "--adapt-mode", choices=("guided", "norm", "self"), default="guided",
        help="guided (default): 10 steps that make the annotated labels survive a copy to "
        "neighbouring slices and back (2-4 s on 2 cores); norm: the network's batch-norm "
        "statistics re-estimated on this volume (no labels, one pass, about 1 s; any "
        "SECONDS > 0 turns it on); self: OneSeg's label-free training loss for SECONDS",
    )


def run_train(args: argparse.Namespace) -> int:
    """Train and report where the model went."""
    from sparseseg.oneseg import api

    api.train(
        images=args.images,
        output=args.output,
        epochs=args.epochs,
        max_time=args.max_time,
        size=args.size,
        device=args.device,
        seed=args.seed,
        bottleneck=args.bottleneck,
        pairs=args.pairs,
        local_chains=args.local_chains,
        scheduled_sampling=args.scheduled_sampling,
        cycle=args.cycle,
        batch_size=args.batch_size,
        pairs_per_epoch=args.pairs_per_epoch,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=not args.quiet,
    )
    return 0


def run_select(args: argparse.Namespace) -> int:
    """Print the slice to annotate."""
    from sparseseg.oneseg import api

    index = api.select(
        model=args.model, image=args.image, criterion=args.criterion,
        annotation=None if args.annotation is None else _annotation(args),
        slice_index=_slice_index(args), device=args.device,
    )
    print(json.dumps({"slice": index}) if args.json else index)
    return 0


def run_propagate(args: argparse.Namespace) -> int:
    """Propagate and write the label volume (or, given folders, one per case)."""
    from sparseseg.oneseg import api

    if is_batch(args):
        return run_propagate_batch(args)
    refuse_batch_options(args, "-i IMAGE_DIR -a ANNOTATION_DIR -o OUTPUT_DIR")
    api.propagate(
        model=args.model,
        image=args.image,
        annotation=_annotation(args),
        output=args.output,
        slice_index=_slice_index(args),
        empty_slices=args.empty_slices or (),
        verify=args.verify,
        keep_largest=args.keep_largest,
        anchor=args.anchor,
        method=args.method,
        fusion=args.fusion,
        adapt=args.adapt,
        adapt_mode=args.adapt_mode,
        intensity_weight=args.intensity_weight,
        hybrid_weight=args.hybrid_weight,
        device=args.device,
        progress=not args.quiet,
        preview=args.preview,
        refiner=args.refiner,
    )
    return 0


def _annotation(args: argparse.Namespace) -> str | list[str]:
    """One annotation file as a path, several as a list."""
    return args.annotation[0] if len(args.annotation) == 1 else args.annotation


def _slice_index(args: argparse.Namespace) -> int | list[int] | None:
    """``--slice`` given once as an int, several times as a list."""
    given = args.slice_index
    return given[0] if given is not None and len(given) == 1 else given


def run_suggest(args: argparse.Namespace) -> int:
    """Print the slice to annotate next."""
    from sparseseg.oneseg import api

    found = api.suggest(
        model=args.model,
        image=args.image,
        annotation=_annotation(args),
        slice_index=_slice_index(args),
        empty_slices=args.empty_slices or (),
        method=args.method,
        criterion=args.criterion,
        anchor=args.anchor,
        fusion=args.fusion,
        keep_largest=args.keep_largest,
        adapt=args.adapt,
        adapt_mode=args.adapt_mode,
        intensity_weight=args.intensity_weight,
        hybrid_weight=args.hybrid_weight,
        device=args.device,
        progress=not args.quiet,
        confidence=args.confidence,
        refiner=args.refiner,
        cross_check=args.cross_check,
    )
    if args.json:
        print(json.dumps({"slice": found.slice,
                          "confidence": round(float(found.confidence[found.slice]), 4),
                          "annotated": found.result.annotation.indices}))
    else:
        print(found.slice)
    return 0


def run_refine(args: argparse.Namespace) -> int:
    """Refine every case's propagated labels and write them."""
    from sparseseg.oneseg import api

    written = api.refine(
        images=args.image,
        annotations=args.annotation,
        labels=args.labels,
        output=args.output,
        steps=args.steps,
        max_time=args.max_time,
        finetune_steps=args.finetune_steps,
        rounds=args.rounds,
        propagation_weight=args.propagation_weight,
        model=args.model,
        save_model=args.save_model,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(f"refined {len(written)} case(s) into {args.output}")
    return 0


def is_batch(args: argparse.Namespace) -> bool:
    """Whether ``propagate`` runs over a folder: ``-a`` is a folder or ``-i`` holds cases."""
    from sparseseg.batch import is_batch_input

    return Path(args.annotation[0]).is_dir() or is_batch_input(args.image)


def run_propagate_batch(args: argparse.Namespace) -> int:
    """Propagate every case of the image folder; exit 1 when some cases failed."""
    from sparseseg.errors import SparsesegError
    from sparseseg.oneseg import api

    for given, option in ((args.slice_index, "--slice"), (args.empty_slices, "--empty-slice"),
                          (args.preview, "--preview")):
        if given is not None:
            raise SparsesegError(f"{option} applies to a single image, not to a batch run")
    if args.refiner is not None:
        raise SparsesegError("--refiner applies to a single image; to refine a folder of "
                             "propagated labels use 'oneseg refine -m REFINER_DIR'")
    if len(args.annotation) != 1:
        raise SparsesegError("a batch run takes one annotation folder (-a ANNOTATION_DIR)")
    return run_batch_command(lambda: api.propagate_batch(
        model=args.model,
        images=args.image,
        annotations=args.annotation[0],
        fusion=args.fusion,
        output=args.output,
        verify=args.verify,
        keep_largest=args.keep_largest,
        anchor=args.anchor,
        method=args.method,
        adapt=args.adapt,
        adapt_mode=args.adapt_mode,
        intensity_weight=args.intensity_weight,
        hybrid_weight=args.hybrid_weight,
        device=args.device,
        progress=not args.quiet,
        **batch_options(args),
    ))
