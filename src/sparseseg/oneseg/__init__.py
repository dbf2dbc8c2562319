"""OneSeg: annotate one slice of a volume, get the whole 3D label.

Self-supervised training learns slice-to-slice correspondence on unlabeled volumes; the
screening module picks the slice most worth annotating; the reconstruction module propagates
its label through the volume. See Wu et al., "OneSeg" (README for the citation).
"""

from sparseseg.oneseg.annotation import SliceAnnotation
from sparseseg.oneseg.api import (
    Suggestion,
    adapt,
    default_model_path,
    propagate,
    propagate_batch,
    refine,
    select,
    suggest,
    train,
)

__all__ = ["SliceAnnotation", "Suggestion", "adapt", "default_model_path", "propagate",
           "propagate_batch", "refine", "select", "suggest", "train"]
