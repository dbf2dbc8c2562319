"""The annotated slices of a volume, read from what a clinician saved from her viewer.

An annotation is any number of labeled slices along the slice axis: a label volume on the
image's grid whose non-empty slices are the annotated ones (what ITK-SNAP, 3D Slicer or napari
save), or 2D label slices each with its index.

Each label value is annotated on the slices where it appears, so two organs may be drawn on
different slices (the liver on slice 40, the spleen on slice 60). On such a slice the drawn
label is exact: its pixels are that label and no other pixel of the slice is. Labels drawn on
the same set of slices form a *group* and are propagated together, competing for pixels as in
a single-slice annotation (:meth:`SliceAnnotation.groups`).

A slice annotated *empty* says that no label is there: it is an annotated slice of every
label, where labels stop (the structure has ended, or an earlier propagation's leak was
erased). A label file cannot say it (an all-zero slice reads as not annotated), so it is given
beside the file: on the command line (``--empty-slice K``, :func:`with_empty_slices`), or in a
sidecar ``CASE.empty.json`` (``{"empty_slices": [K, ...]}``) next to the label file
``CASE.nii.gz``, which :func:`read_annotation` reads with it (so folders of annotations carry
them too; the napari widget's autosave writes one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError
from sparseseg.io.axes import SLICE_AXIS, from_slices, slice_shape, to_slices
from sparseseg.io.empty_slices import empty_slices_file, read_empty_slices
from sparseseg.io.reader import read_label
from sparseseg.io.volume import Volume


@dataclass(frozen=True)
class SliceAnnotation:
    """Labeled slices of a volume.

    Args:
        slices: ``{index: 2D label}`` of every annotated slice (indices along the slice axis,
            labels of the volume's in-plane shape; an all-zero slice is annotated empty, and at
            least one slice must hold a label).
        n_slices: Number of slices of the volume.

    Example:
        >>> ann = SliceAnnotation({3: np.ones((4, 4), np.uint8)}, n_slices=8)
        >>> ann.indices
        [3]
    """

    slices: Mapping[int, np.ndarray]
    n_slices: int

    def __post_init__(self) -> None:
        if not self.slices or not any(s.any() for s in self.slices.values()):
            raise ValueError("an annotation needs at least one labeled slice")
        shapes = {s.shape for s in self.slices.values()}
        if len(shapes) != 1:
            raise ValueError(f"annotated slices differ in shape: {sorted(shapes)}")
        for k in self.slices:
            if not 0 <= k < self.n_slices:
                raise ValueError(f"slice index {k} outside 0..{self.n_slices - 1}")

    @property
    def indices(self) -> list[int]:
        """Annotated slice indices, sorted."""
        return sorted(self.slices)

    @property
    def plane(self) -> tuple[int, ...]:
        """In-plane shape of the slices."""
        return next(iter(self.slices.values())).shape

    @property
    def dtype(self) -> np.dtype:
        """Integer dtype of the labels."""
        return np.result_type(*[s.dtype for s in self.slices.values()])

    def labels(self) -> list[int]:
        """Non-zero label values drawn on any slice, sorted."""
        values = set()
        for s in self.slices.values():
            values.update(int(v) for v in np.unique(s) if v != 0)
        return sorted(values)

    def drawn_slices(self, value: int) -> list[int]:
        """Slices on which ``value`` is drawn, sorted."""
        return [k for k in self.indices if (self.slices[k] == value).any()]

    def key_slices(self, value: int) -> list[int]:
        """Slices on which ``value`` is drawn, and those annotated empty, sorted."""
        return [k for k in self.indices
                if (self.slices[k] == value).any() or not self.slices[k].any()]

    def groups(self) -> list[tuple[list[int], list[int]]]:
        """``(label values, slices)`` of the labels drawn on exactly the same slices.

        With every label drawn on every annotated slice (the usual case) there is one group.
        """
        by_slices: dict[tuple[int, ...], list[int]] = {}
        for v in self.labels():
            by_slices.setdefault(tuple(self.key_slices(v)), []).append(v)
        return [(values, list(keys)) for keys, values in by_slices.items()]

    def volume(self, axis: int = SLICE_AXIS) -> np.ndarray:
        """The annotation as a label volume (zeros on the slices not annotated)."""
        out = np.zeros((self.n_slices, *self.plane), dtype=self.dtype)
        for k, s in self.slices.items():
            out[k] = s
        return from_slices(out, axis)

    def restore(self, stack: np.ndarray) -> np.ndarray:
        """Put the drawn labels back, in place, into ``stack`` (slices first).

        On each annotated slice the labels drawn there become exactly as drawn; labels not
        drawn on that slice are left as they are; a slice annotated empty is emptied.
        """
        for k, s in self.slices.items():
            drawn = np.isin(stack[k], np.unique(s)) if s.any() else np.ones(s.shape, bool)
            stack[k][drawn] = 0
            stack[k][s != 0] = s[s != 0]
        return stack

    def with_slice(self, index: int, label: np.ndarray) -> SliceAnnotation:
        """A copy with slice ``index`` annotated as ``label`` (replacing what was there); an
        all-zero ``label`` annotates the slice as empty."""
        if label.shape != self.plane:
            raise ValueError(f"slice shape {label.shape} differs from {self.plane}")
        return SliceAnnotation({**self.slices, int(index): label}, self.n_slices)


def _check_index(index: int, n: int, path: Path | None) -> None:
    if not 0 <= index < n:
        raise InputError(f"slice index {index} is outside the volume (0..{n - 1})", path)


def check_on_image_grid(volume: Volume, image: Volume) -> None:
    """Refuse a label volume that does not lie on ``image``'s voxel grid.

    Raises:
        InputError: Naming ``volume.path``: another shape, or another spacing, origin or
            direction.
    """
    if volume.shape != image.shape:
        raise InputError(f"shape {volume.shape} differs from image shape {image.shape}",
                         volume.path)
    if not volume.same_geometry(image):
        raise InputError("geometry (spacing/origin/direction) differs from the image",
                         volume.path)


def annotated_slices(
    annotation: Volume,
    image: Volume,
    *,
    index: int | None = None,
    axis: int = SLICE_AXIS,
) -> SliceAnnotation:
    """The labeled slices of one annotation volume or 2D slice.

    Args:
        annotation: Either a label volume on the image's grid with one or more non-empty
            slices, or a 2D label image of the slice's shape (then ``index`` is required).
        image: The image the annotation belongs to.
        index: Slice index, required for a 2D annotation; for a volume with exactly one
            labeled slice it must be that slice.
        axis: Slice axis.

    Raises:
        InputError: No label, shape or geometry mismatch, index outside the volume, or a 2D
            annotation without an index.
    """
    path = annotation.path
    n = image.shape[axis]
    plane = slice_shape(image.shape, axis)
    if index is not None:
        _check_index(index, n, path)
    arr = annotation.array
    if arr.ndim == 3 and arr.shape[axis] == 1 and arr.shape != image.shape:
        arr = np.take(arr, 0, axis=axis)  # a one-slice volume is a 2D annotation
    if arr.ndim == 2:
        if index is None:
            raise InputError("is a 2D annotation; give its slice index with --slice", path)
        if arr.shape != plane:
            raise InputError(
                f"2D annotation shape {arr.shape} differs from slice shape {plane}", path
            )
        if not arr.any():
            raise InputError("annotation slice holds no label", path)
        return SliceAnnotation({int(index): np.ascontiguousarray(arr)}, n)
    check_on_image_grid(annotation, image)
    stack = to_slices(arr, axis)
    labeled = np.flatnonzero(stack.reshape(n, -1).any(axis=1))
    if labeled.size == 0:
        raise InputError("annotation holds no labeled slice", path)
    if index is not None and (labeled.size != 1 or index != int(labeled[0])):
        shown = ", ".join(str(i) for i in labeled[:5]) + (" ..." if labeled.size > 5 else "")
        raise InputError(f"--slice {index} given, but the labeled slices are {shown}", path)
    return SliceAnnotation({int(k): np.ascontiguousarray(stack[k]) for k in labeled}, n)


def with_empty_slices(annotation: SliceAnnotation, indices: Iterable[int], *,
                      path: Path | None = None) -> SliceAnnotation:
    """``annotation`` with the slices ``indices`` annotated empty: no label is there.

    Every label stops at such a slice: with the default ``union`` fusion the chain from the
    drawn slice runs right up to it, and nothing is propagated at or beyond it (with
    ``distance`` or ``nearest`` the label fades out half way). Mark the first slice past the
    structure's end, or the first slice of a leak. A slice already annotated empty may be named
    again.

    Args:
        annotation: The drawn slices.
        indices: Slices that hold no structure.
        path: The annotation file, named in errors.

    Raises:
        InputError: An index outside the volume, or a slice on which labels are drawn.

    Example:
        >>> ann = SliceAnnotation({3: np.ones((4, 4), np.uint8)}, n_slices=8)
        >>> with_empty_slices(ann, [6]).indices
        [3, 6]
    """
    slices = dict(annotation.slices)
    for k in sorted({int(i) for i in indices}):
        if not 0 <= k < annotation.n_slices:
            raise InputError(f"empty slice {k} is outside the volume "
                             f"(0..{annotation.n_slices - 1})", path)
        if k in slices and slices[k].any():
            raise InputError(f"empty slice {k} is a slice on which labels are drawn", path)
        slices[k] = np.zeros(annotation.plane, annotation.dtype)
    return SliceAnnotation(slices, annotation.n_slices)


def merge_annotations(parts: Sequence[SliceAnnotation], *, path: Path | None = None
                      ) -> SliceAnnotation:
    """Join annotations of the same volume; a slice annotated twice must agree.

    Raises:
        InputError: The same slice annotated with different labels.
    """
    slices: dict[int, np.ndarray] = {}
    for part in parts:
        for k, s in part.slices.items():
            if k in slices and not np.array_equal(slices[k], s):
                raise InputError(f"slice {k} is annotated twice with different labels", path)
            slices[k] = s
    return SliceAnnotation(slices, parts[0].n_slices)


def read_annotation(
    paths: str | Path | Sequence[str | Path],
    image: Volume,
    *,
    index: int | Sequence[int] | None = None,
) -> SliceAnnotation:
    """Read annotation files: one label volume, or 2D slices each with its index.

    Args:
        paths: One label volume (1..N labeled slices) or 2D label file, or several files.
        image: The image they belong to.
        index: The slice index of each file, in the order of ``paths`` (required for 2D
            files; optional for a volume with one labeled slice).

    Raises:
        InputError: Unreadable or bad annotation (see :func:`annotated_slices`), a number of
            indices that does not match the files, or a slice annotated twice differently.
    """
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    indices = [index] if index is None or isinstance(index, int) else list(index)
    if len(files) > 1 and indices == [None]:
        raise InputError(f"{len(files)} annotation files given; give each one's slice with "
                         "--slice K (once per file, in the same order)", Path(files[0]))
    if len(indices) != len(files):
        raise InputError(f"{len(files)} annotation file(s) but {len(indices)} --slice "
                         "indices; give one --slice per file", Path(files[0]))
    parts = [annotated_slices(read_label(p, ndim=None), image, index=k)
             for p, k in zip(files, indices, strict=True)]
    annotation = merge_annotations(parts, path=Path(files[0]))
    for p in files:
        side = empty_slices_file(p)
        if side.is_file():
            annotation = with_empty_slices(annotation, read_empty_slices(side), path=side)
    return annotation
