"""sparseseg: 3D medical image segmentation from almost no annotation.

Two published methods and their combination:

* OneSeg (:mod:`sparseseg.oneseg`): annotate one slice, propagate it through the volume.
* LTUDA (:mod:`sparseseg.ltuda`): one multi-organ model from partially labeled datasets.

Heavy dependencies (torch, MONAI) are imported lazily by the submodules that need them.
"""

from sparseseg.errors import SparsesegError

__version__ = "0.1.0"

__all__ = ["SparsesegError", "__version__"]
