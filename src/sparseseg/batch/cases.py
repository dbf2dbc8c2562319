"""Cases of a batch run: matching files to case names, splitting into parts, output paths.

Cases are split like nnU-Net's ``--num_parts/--part_id``: sorted by case name, every
``num_parts``-th from ``part_id`` on (0-based), so every case is in exactly one part whatever
the number of cases. Each case is written to ``OUTPUT/CASE.nii.gz`` (nnU-Net's naming).

Example:
    >>> output_path("labels", "case_01").as_posix()
    'labels/case_01.nii.gz'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sparseseg.errors import InputError, SparsesegError
from sparseseg.io.dataset import Case, find_cases
from sparseseg.io.formats import case_name, is_volume_file, split_extension

OUTPUT_EXTENSION = ".nii.gz"
"""Extension of the files batch runs write (``CASE.nii.gz``)."""

def validate_parts(num_parts: int, part_id: int) -> None:
    """Check a ``part_id`` of ``num_parts`` split.

    Raises:
        SparsesegError: ``num_parts < 1`` or ``part_id`` outside ``0 .. num_parts - 1``.
    """
    if int(num_parts) < 1:
        raise SparsesegError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= int(part_id) < int(num_parts):
        raise SparsesegError(
            f"--part-id must be in 0..{int(num_parts) - 1} for --num-parts {num_parts} "
            f"(0-based), got {part_id}"
        )


def split_parts(cases: Sequence[Case], num_parts: int = 1, part_id: int = 0) -> list[Case]:
    """The cases of part ``part_id`` (0-based) of ``num_parts``.

    Cases are sorted by name and every ``num_parts``-th is taken starting at ``part_id``, like
    nnU-Net's ``--num_parts/--part_id``. Every case falls in exactly one part; parts differ in
    size by at most one case.

    Raises:
        SparsesegError: Invalid split (see :func:`validate_parts`).
    """
    validate_parts(num_parts, part_id)
    return sorted(cases, key=lambda c: c.name)[int(part_id) :: int(num_parts)]


def output_path(output: str | Path, name: str) -> Path:
    """The output file of case ``name`` in folder ``output``: ``OUTPUT/NAME.nii.gz``."""
    return Path(output) / f"{name}{OUTPUT_EXTENSION}"


def is_batch_input(path: str | Path) -> bool:
    """Whether ``path`` holds several cases: a dataset folder or a folder of volume files.

    A folder holding one DICOM series is a single image, not a batch.

    Raises:
        InputError: ``path`` is a folder without anything usable (see ``find_cases``).
    """
    path = Path(path)
    if not path.is_dir():
        return False
    return any(case.image != path for case in find_cases(path))


def match_case_files(
    names: Sequence[str], folder: str | Path
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Volume files of ``folder`` matching each case name.

    A file matches case ``NAME`` when its name without extension is ``NAME`` (nnU-Net's label
    naming, ``NAME.nii.gz``); failing that, when its case name is ``NAME`` (so ``NAME_0000``
    files match too). Hidden files are ignored.

    Args:
        names: Case names.
        folder: Folder of files (annotations, labels...).

    Returns:
        ``(matches, unmatched)``: case name -> matching files (empty when none, several when
        ambiguous), and the volume files matching no case.

    Raises:
        InputError: ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError("no such folder", folder)
    if not folder.is_dir():
        raise InputError("is a file; batch runs need a folder here (files named CASE.nii.gz)",
                         folder)
    files = sorted(p for p in folder.iterdir()
                   if not p.name.startswith(".") and p.is_file() and is_volume_file(p))
    by_stem: dict[str, list[Path]] = {}
    by_case: dict[str, list[Path]] = {}
    for file in files:
        by_stem.setdefault(split_extension(file)[0], []).append(file)
        by_case.setdefault(case_name(file), []).append(file)
    matches = {name: by_stem.get(name) or by_case.get(name, []) for name in names}
    used = {file for found in matches.values() for file in found}
    return matches, [file for file in files if file not in used]
