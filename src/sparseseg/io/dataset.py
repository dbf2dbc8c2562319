"""Collect cases from dataset folders (nnU-Net/MSD layout), plain folders, or file lists."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sparseseg.errors import InputError
from sparseseg.io.formats import case_name, is_volume_file, split_extension


@dataclass(frozen=True)
class Case:
    """One image, optionally with its label map.

    Args:
        name: Case identifier (file name without extension and ``_0000`` suffix).
        image: Image file or DICOM folder.
        label: Label file, or ``None`` when unlabeled.
    """

    name: str
    image: Path
    label: Path | None = None


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is in the nnU-Net/MSD layout (has ``imagesTr/``)."""
    return path.is_dir() and (path / "imagesTr").is_dir()


def read_dataset_json(path: str | Path) -> dict:
    """Read ``dataset.json`` of a dataset folder, or ``{}`` when it has none.

    Raises:
        InputError: The file exists but is not valid JSON.
    """
    file = Path(path) / "dataset.json"
    if not file.exists():
        return {}
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"is not valid JSON ({exc})", file) from None


def _dataset_cases(folder: Path, *, with_labels: bool) -> list[Case]:
    images = sorted(p for p in (folder / "imagesTr").iterdir() if is_volume_file(p))
    if not images:
        raise InputError("imagesTr/ holds no volume files", folder)
    cases = []
    for image in images:
        stem, ext = split_extension(image)
        if not stem.endswith("_0000"):
            continue  # other channels of a multi-channel case
        name = case_name(image)
        label = None
        if with_labels:
            label = folder / "labelsTr" / f"{name}{ext}"
            if not label.exists():
                raise InputError(f"image {image.name} has no label labelsTr/{label.name}", folder)
        cases.append(Case(name, image, label))
    if not cases:
        raise InputError("imagesTr/ holds no CASE_0000 files", folder)
    return cases


def _folder_cases(folder: Path) -> list[Case]:
    entries = sorted(folder.iterdir())
    files = [p for p in entries if p.is_file() and is_volume_file(p)]
    if files:
        return [Case(case_name(p), p) for p in files]
    # A folder of DICOM series folders, or a DICOM series itself.
    subdirs = [p for p in entries if p.is_dir()]
    if subdirs and not any(p.is_file() for p in entries):
        return [Case(p.name, p) for p in subdirs]
    return [Case(folder.name, folder)]


def find_cases(
    inputs: str | Path | Iterable[str | Path], *, with_labels: bool = False
) -> list[Case]:
    """Gather cases from files, plain folders and nnU-Net/MSD dataset folders.

    Args:
        inputs: One path or several. A dataset folder contributes ``imagesTr/*_0000.*``; a
            plain folder its volume files (or its DICOM series sub-folders); a file itself.
        with_labels: Require and attach ``labelsTr/`` labels (dataset folders only).

    Returns:
        Cases in input order, names made unique.

    Raises:
        InputError: A path is missing, a folder holds nothing usable, or a label is missing.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    cases: list[Case] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError("no such file or folder", path)
        if is_dataset_folder(path):
            cases.extend(_dataset_cases(path, with_labels=with_labels))
        elif with_labels:
            raise InputError("is not a dataset folder (no imagesTr/ and labelsTr/)", path)
        elif path.is_dir():
            cases.extend(_folder_cases(path))
        else:
            cases.append(Case(case_name(path), path))
    taken = {case.name for case in cases}
    used: set[str] = set()
    unique = []
    for case in cases:
        name, count = case.name, 0
        while name in used or (count and name in taken):
            count += 1
            name = f"{case.name}_{count}"
        used.add(name)
        unique.append(Case(name, case.image, case.label))
    return unique
