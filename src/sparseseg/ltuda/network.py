"""The 2D U-Net with one sigmoid channel per organ, and its projection head for LTUDA.

Plain torch (no torchvision). The encoder halves the resolution ``depth`` times with widths
``base * (1, 2, 4, 8, 8, ...)`` capped at ``8 * base`` (the paper: 64-128-256-512-512); the
decoder mirrors it with skip connections. :meth:`UNet2D.forward` returns the organ logits and the
last decoder feature map, on which the projection head of the prototype stage works.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


def unet_widths(base_channels: int, depth: int) -> list[int]:
    """Channel widths from the top level down to the bottleneck (``depth + 1`` levels)."""
    return [base_channels * min(2**i, 8) for i in range(depth + 1)]


class UNet2D(nn.Module):
    """2D U-Net returning per-organ logits and the last decoder features.

    Args:
        in_channels: Image channels.
        out_channels: Number of organs (one sigmoid channel each, no background channel).
        base_channels: Width of the first level.
        depth: Number of down-sampling steps; the input size must be divisible by
            ``2 ** depth``.

    Example:
        >>> net = UNet2D(in_channels=1, out_channels=3, base_channels=8, depth=3)
        >>> logits, features = net(torch.zeros(2, 1, 32, 32))
        >>> logits.shape, features.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 8, 32, 32]))
    """

    def __init__(
        self, *, in_channels: int = 1, out_channels: int, base_channels: int = 64, depth: int = 4
    ) -> None:
        super().__init__()
        widths = unet_widths(base_channels, depth)
        self.depth = depth
        self.feature_channels = widths[0]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(previous, width))
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(depth - 1, -1, -1):
            self.ups.append(nn.ConvTranspose2d(previous, widths[level], 2, stride=2))
            self.decoders.append(ConvBlock(2 * widths[level], widths[level]))
            previous = widths[level]
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, features)`` of shapes ``(B, organs, H, W)``, ``(B, base, H, W)``."""
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        x = skips.pop()
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            x = decoder(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x), x


class ProjectionHead(nn.Module):
    """1x1 conv, batch norm, ReLU, 1x1 conv to ``dim``, then L2 normalisation per pixel.

    Args:
        in_channels: Decoder feature channels.
        dim: Embedding size (64 in the paper).
    """

    def __init__(self, in_channels: int, dim: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, dim, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` features to unit-norm ``(B, dim, H, W)`` embeddings."""
        return F.normalize(self.layers(features), dim=1)


def default_depth(size: int, max_depth: int = 4, min_size: int = 4) -> int:
    """Largest depth <= ``max_depth`` that keeps the bottleneck at least ``min_size`` wide."""
    depth = 0
    while depth < max_depth:
        step = 2 ** (depth + 1)
        if size % step or size // step < min_size:
            break
        depth += 1
    return depth
