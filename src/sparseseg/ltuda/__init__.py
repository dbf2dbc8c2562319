"""LTUDA: one multi-organ model from partially labeled datasets.

Each training dataset labels some organs; for the others its zeros mean "unknown". Stage 1
(cross-set data augmentation, CDA) trains a mean-teacher 2D U-Net on CutMix-mixed views with
merged pseudo-labels; stage 2 (prototype-based distribution alignment, PDA) aligns labeled and
unlabeled organ features with two prototype classifiers. See :func:`train` and :func:`predict`.
"""

from sparseseg.ltuda.api import predict, train
from sparseseg.ltuda.spec import DatasetSpec

__all__ = ["DatasetSpec", "predict", "train"]
