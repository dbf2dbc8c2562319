"""File extensions sparseseg reads and writes."""

from __future__ import annotations

from pathlib import Path

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""Single-file volume formats, longest suffix first."""

IMAGE_2D_EXTENSIONS = (".png",)
"""2D formats accepted for a single annotated slice."""


def split_extension(path: str | Path) -> tuple[str, str]:
    """Split a file name into stem and a known (possibly double) extension.

    Example:
        >>> split_extension("case_0000.nii.gz")
        ('case_0000', '.nii.gz')
    """
    name = Path(path).name
    lower = name.lower()
    for ext in VOLUME_EXTENSIONS + IMAGE_2D_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)], name[-len(ext) :]
    suffix = Path(name).suffix
    return name[: len(name) - len(suffix)], suffix


def is_volume_file(path: str | Path) -> bool:
    """Whether ``path`` has a volume extension sparseseg reads."""
    return str(path).lower().endswith(VOLUME_EXTENSIONS)


def case_name(path: str | Path) -> str:
    """Case identifier of an image or label file: no extension, no ``_0000`` channel suffix.

    Example:
        >>> case_name("imagesTr/la_001_0000.nii.gz")
        'la_001'
    """
    stem, _ = split_extension(path)
    if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
        stem = stem[:-5]
    return stem
