"""OneSeg: annotate one slice of a volume, get the whole 3D label.

Self-supervised training learns slice-to-slice correspondence on unlabeled volumes; the
screening module picks the slice most worth annotating; the reconstruction module propagates
its label through the volume. See Wu et al., "OneSeg" (README for the citation).
"""

from sparseseg.oneseg.api import propagate, select, train

__all__ = ["propagate", "select", "train"]
