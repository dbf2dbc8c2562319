"""The sidecar of an annotation file listing its slices annotated empty.

A label file cannot say that a slice holds no structure (an all-zero slice reads as not
annotated). Beside ``CASE.nii.gz`` a ``CASE.empty.json`` holding ``{"empty_slices": [K, ...]}``
(indices along the slice axis) says it: :func:`sparseseg.oneseg.annotation.read_annotation`
reads it with the label file, and the napari widget's autosave writes one. Plain JSON, no
torch, no Qt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.formats import split_extension
from sparseseg.io.writer import atomic_path

EMPTY_SUFFIX = ".empty.json"
"""The sidecar of ``CASE.nii.gz`` is ``CASE.empty.json``."""


def empty_slices_file(annotation: str | Path) -> Path:
    """The sidecar listing the slices annotated empty of annotation file ``annotation``.

    Example:
        >>> empty_slices_file("annotations/la_003.nii.gz").name
        'la_003.empty.json'
    """
    annotation = Path(annotation)
    return annotation.with_name(split_extension(annotation)[0] + EMPTY_SUFFIX)


def read_empty_slices(path: str | Path) -> list[int]:
    """The slice indices of a sidecar ``{"empty_slices": [K, ...]}``, sorted.

    Raises:
        InputError: Naming ``path``: unreadable, not JSON, or no list of integers.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read the list of empty slices: {exc}", path) from None
    values = data.get("empty_slices") if isinstance(data, dict) else None
    if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InputError('expected {"empty_slices": [K, ...]} with integer slice indices', path)
    return sorted(set(values))


def write_empty_slices(annotation: str | Path, slices: Iterable[int]) -> Path | None:
    """Write (atomically) or remove the sidecar of annotation file ``annotation``.

    Returns:
        The sidecar written, or ``None`` when ``slices`` is empty (an old one is removed).
    """
    side = empty_slices_file(annotation)
    values = sorted({int(k) for k in slices})
    if not values:
        side.unlink(missing_ok=True)
        return None
    with atomic_path(side) as tmp:
        tmp.write_text(json.dumps({"empty_slices": values}) + "\n")
    return side
