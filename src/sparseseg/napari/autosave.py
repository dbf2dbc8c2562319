"""Autosave of the painted annotation, so a crashed viewer loses nothing.

While a person paints, the widget writes the painted slices (not the propagated ones, which
one click recomputes) a few seconds after the last stroke, atomically (temporary file and
rename, :func:`sparseseg.io.write_volume`), to one file per image in the autosave folder:
``$SPARSESEG_AUTOSAVE_DIR``, else ``$XDG_STATE_HOME/sparseseg/autosave``, else
``~/.local/state/sparseseg/autosave``. The file is named after the image's case and a digest
of its absolute path, so two images with the same name do not share it. Slices painted
empty (no structure there, :meth:`~sparseseg.napari.widget.AnnotationWidget.mark_empty`),
which a label file cannot hold, are listed beside it in ``NAME.empty.json``, the sidecar that
``oneseg propagate`` reads with an annotation (:mod:`sparseseg.oneseg.annotation`).
``sparseseg view IMAGE`` opens it again when no ``--labels`` is given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.empty_slices import empty_slices_file, read_empty_slices, write_empty_slices
from sparseseg.io.formats import case_name
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.napari.layers import label_dtype

AUTOSAVE_ENV = "SPARSESEG_AUTOSAVE_DIR"
"""Environment variable naming the autosave folder."""


def autosave_folder() -> Path:
    """The folder autosaves go to (not created here)."""
    if os.environ.get(AUTOSAVE_ENV):
        return Path(os.environ[AUTOSAVE_ENV]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "sparseseg" / "autosave"


def autosave_path(image: str | Path) -> Path:
    """The autosave file of the annotation of ``image`` (a volume file or DICOM folder).

    Example:
        >>> autosave_path("/data/la_003_0000.nii.gz").name  # doctest: +ELLIPSIS
        'la_003-....nii.gz'
    """
    image = Path(image).expanduser().resolve()
    digest = hashlib.sha1(str(image).encode()).hexdigest()[:10]
    return autosave_folder() / f"{case_name(image)}-{digest}.nii.gz"


def find_autosave(image: str | Path) -> Path | None:
    """The autosave of ``image``'s annotation, when there is one."""
    path = autosave_path(image)
    return path if path.is_file() else None


def write_autosave(image: str | Path, annotation: np.ndarray, reference: Volume,
                   empty_slices: Iterable[int] = ()) -> Path:
    """Write the painted annotation of ``image`` atomically; return the file.

    Args:
        image: The image file or folder the annotation belongs to.
        annotation: Labels indexed ``[i, j, k]`` on the image's grid (painted slices only).
        reference: Volume whose geometry the file gets (the image).
        empty_slices: Slices painted empty (indices ``k``), written beside the file.

    Raises:
        InputError: The autosave folder cannot be written.
    """
    path = autosave_path(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_empty_slices(path, empty_slices)
    return write_volume(path, annotation, reference, dtype=label_dtype(annotation))


def autosaved_empty_slices(image: str | Path) -> list[int]:
    """The slices painted empty in ``image``'s autosave (none when there is no list, or
    when it cannot be read: the labels still restore)."""
    side = empty_slices_file(autosave_path(image))
    try:
        return read_empty_slices(side) if side.is_file() else []
    except InputError:
        return []
