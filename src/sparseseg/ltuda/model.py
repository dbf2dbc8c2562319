"""The full LTUDA model: U-Net, projection head, and the two prototype classifiers."""

from __future__ import annotations

import torch
from torch import nn

from sparseseg.ltuda.network import ProjectionHead, UNet2D
from sparseseg.ltuda.prototypes import PrototypeClassifier

CLASSIFIERS = ("linear", "labeled", "unlabeled")
"""Linear threshold classifier, labeled-prototype and unlabeled-prototype classifiers."""


class LTUDAModel(nn.Module):
    """U-Net with sigmoid organ channels, plus the prototype branch of LTUDA's stage 2.

    Args:
        n_organs: Organ channels.
        base_channels: U-Net width.
        depth: U-Net down-sampling steps.
        embed_dim: Projection size (64 in the paper).
        n_prototypes: Prototypes per class, background included (5 in the paper).
        temperature: Cosine logits are divided by it to give class probabilities.
    """

    def __init__(
        self,
        *,
        n_organs: int,
        base_channels: int = 64,
        depth: int = 4,
        embed_dim: int = 64,
        n_prototypes: int = 5,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_organs = n_organs
        self.temperature = temperature
        self.unet = UNet2D(out_channels=n_organs, base_channels=base_channels, depth=depth)
        self.projection = ProjectionHead(self.unet.feature_channels, embed_dim)
        kw = {"n_classes": n_organs + 1, "dim": embed_dim, "n_prototypes": n_prototypes}
        self.proto_labeled = PrototypeClassifier(**kw)
        self.proto_unlabeled = PrototypeClassifier(**kw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(organ logits, decoder features)`` of the U-Net."""
        return self.unet(x)

    def class_scores(self, x: torch.Tensor, classifier: str = "linear") -> torch.Tensor:
        """Per-class scores ``(B, organs + 1, H, W)`` whose argmax is the class map.

        For ``linear``, channel 0 is the constant 0.5 threshold and channels 1.. the sigmoid
        probabilities, so the argmax is the threshold classifier (Eq. 2) and the scores can be
        resized before deciding. For the prototype classifiers: softmax of cosine logits.
        """
        return self.all_class_scores(x, (classifier,))[classifier]

    def all_class_scores(self, x: torch.Tensor,
                         classifiers: tuple[str, ...] = CLASSIFIERS) -> dict[str, torch.Tensor]:
        """:meth:`class_scores` of several classifiers from one U-Net pass."""
        unknown = [c for c in classifiers if c not in CLASSIFIERS]
        if unknown:
            raise ValueError(f"unknown classifier {unknown[0]!r}; use one of {CLASSIFIERS}")
        logits, features = self.unet(x)
        out = {}
        emb = None
        for classifier in classifiers:
            if classifier == "linear":
                probs = torch.sigmoid(logits)
                out[classifier] = torch.cat([torch.full_like(probs[:, :1], 0.5), probs], dim=1)
                continue
            if emb is None:
                emb = self.projection(features)
            clf = self.proto_labeled if classifier == "labeled" else self.proto_unlabeled
            proto_logits, _ = clf(emb)
            out[classifier] = torch.softmax(proto_logits / self.temperature, dim=1)
        return out
