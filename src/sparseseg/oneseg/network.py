"""The OneSeg feature extraction module: bottleneck, then encoder (paper Eq. 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparseseg.oneseg.attention import LocalAttentionCopy
from sparseseg.oneseg.bottleneck import make_bottleneck
from sparseseg.oneseg.encoder import ResNetEncoder


@dataclass
class NetworkConfig:
    """Everything needed to rebuild the network.

    Args:
        bottleneck: ``gabor``, ``edge`` or ``intensity``.
        scales: Gabor scales.
        orientations: Gabor orientations.
        stages: ResNet-18 stages kept.
        width: First-stage channels (ResNet-18: 64; the default 32 halves every stage,
            about 2.5x faster to train on a CPU).
        embedding: Feature channels used for attention.
        radius: Attention window radius (P = 2 * radius + 1).
        temperature: Attention softmax temperature (features are L2-normalised, so the
            dot products are cosine similarities in ``[-1, 1]``).
    """

    bottleneck: str = "gabor"
    scales: int = 4
    orientations: int = 4
    stages: int = 2
    width: int = 32
    embedding: int = 64
    radius: int = 6
    temperature: float = 0.05

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        """Rebuild from :meth:`to_dict`'s output, ignoring unknown keys."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class OneSegNet(nn.Module):
    """Feature extractor ``f = E(B(x))`` plus the attention copy.

    Args:
        config: Network settings.
    """

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetworkConfig()
        c = self.config
        self.bottleneck = make_bottleneck(
            c.bottleneck, scales=c.scales, orientations=c.orientations
        )
        self.encoder = ResNetEncoder(
            in_channels=self.bottleneck.out_channels,
            stages=c.stages,
            width=c.width,
            embedding=c.embedding,
        )
        self.copy = LocalAttentionCopy(radius=c.radius, temperature=c.temperature)
        self.stride = self.encoder.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length features of normalised slices: ``(B, 1, H, W)`` -> ``(B, E, H/4, W/4)``.

        L2 normalisation makes a pixel most similar to itself, so a sharp softmax copies
        rather than blurs; raw dot products favour whichever neighbour has the largest norm.
        """
        # float(): under bf16 autocast the encoder's output is bf16; normalised features (and
        # the attention built on them) stay float32, whose fine similarities the copy needs.
        return F.normalize(self.encoder(self.bottleneck(x)).float(), dim=1)

    @torch.no_grad()
    def embed_slices(self, slices: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
        """Features of many slices in batches, without gradients: ``(N, 1, H, W)`` input."""
        outs = [self(slices[i : i + batch_size]) for i in range(0, len(slices), batch_size)]
        return torch.cat(outs)
