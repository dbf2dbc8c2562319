"""Generated data: the phantom that serves as sparseseg's embedded default."""

from sparseseg.data.phantom import PHANTOM_LABELS, make_phantom, make_phantom_dataset

__all__ = ["PHANTOM_LABELS", "make_phantom", "make_phantom_dataset"]
