"""Reading and writing volumes, their geometry, and datasets of them."""

from sparseseg.io.axes import SLICE_AXIS, from_slices, slice_shape, to_slices
from sparseseg.io.dataset import Case, find_cases
from sparseseg.io.reader import read_image, read_label, read_volume
from sparseseg.io.volume import Volume
from sparseseg.io.writer import atomic_path, write_volume

__all__ = [
    "SLICE_AXIS",
    "Case",
    "Volume",
    "atomic_path",
    "find_cases",
    "from_slices",
    "read_image",
    "read_label",
    "read_volume",
    "slice_shape",
    "to_slices",
    "write_volume",
]
