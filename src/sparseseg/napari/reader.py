"""npe2 reader: NIfTI, NRRD, MetaImage files and DICOM folders, geometry kept.

Volumes open in layer order ``(k, j, i)`` with the spacing as ``scale``
(:mod:`sparseseg.napari.layers`). A volume of few non-negative integer values (a label map)
opens as a labels layer, anything else as an image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparseseg.io.formats import is_volume_file
from sparseseg.io.reader import read_volume
from sparseseg.io.volume import Volume
from sparseseg.napari.layers import LayerData, image_layer_data, labels_layer_data

MAX_LABELS = 64
"""A volume of at most this many distinct values below 256 opens as labels."""


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader function for ``path``, or ``None`` when sparseseg cannot read it.

    Args:
        path: A file or folder (napari passes a list when several are dropped at once).
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_readable(Path(p)) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read each volume as a napari layer (image, or labels for a label map).

    Raises:
        InputError: Missing, unreadable, corrupt or not 3D.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        volume = read_volume(p)
        layers.append(volume_layer_data(volume))
    return layers


def volume_layer_data(volume: Volume) -> LayerData:
    """Layer data of a volume: labels when it looks like a label map, else image."""
    if looks_like_labels(volume.array):
        return labels_layer_data(volume)
    return image_layer_data(volume)


def looks_like_labels(array: np.ndarray) -> bool:
    """Whether an array is a label map: integers in ``0..255``, at most :data:`MAX_LABELS`."""
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        return False
    if array.min() < 0 or array.max() > 255:
        return False
    return np.unique(array).size <= MAX_LABELS


def _readable(path: Path) -> bool:
    if path.is_dir():
        return _holds_dicom_series(path)
    return path.is_file() and is_volume_file(path)


def _holds_dicom_series(folder: Path) -> bool:
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "no series found" is an answer here
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return False
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
