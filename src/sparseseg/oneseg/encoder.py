"""ResNet-18 feature encoder giving dense features at 1/4 resolution.

Following CorrFlow's variant for dense correspondence: the stem (7x7 conv) has stride 2 and no
max-pool, ``layer1`` keeps the resolution, ``layer2`` has stride 2, and later stages (when
kept) run at stride 1 so features stay at 1/4 of the input. A 1x1 convolution projects to a
small embedding. Residual blocks are the ResNet-18 basic block, two per stage.

The block is written here rather than taken from MONAI (``monai.networks.nets.resnet.
ResNetBlock``, which it matches layer for layer and parameter name for parameter name, so
models trained with either load in both): importing MONAI costs about 3 s on a 2-core machine,
more than propagating a whole volume, and every ``sparseseg oneseg`` command would pay it.
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_PLANES = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and a residual connection.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution.
        downsample: Maps the input to the output's shape when they differ.
    """

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W)`` -> ``(B, planes, H / stride, W / stride)``."""
        residual = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + residual)


def _stage(in_planes: int, planes: int, *, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    return nn.Sequential(
        BasicBlock(in_planes, planes, stride=stride, downsample=downsample),
        BasicBlock(planes, planes),
    )


class ResNetEncoder(nn.Module):
    """ResNet-18 trunk at 1/4 resolution with a 1x1 projection.

    Args:
        in_channels: Channels of the bottleneck output.
        stages: Number of ResNet-18 stages kept (2 to 4). 2 is the fast default measured on
            CPUs; 4 is the full ResNet-18 (stages 3-4 at stride 1).
        width: Channels of the first stage (64 in ResNet-18); later stages double it.
        embedding: Output channels of the projection.
    """

    def __init__(
        self, *, in_channels: int, stages: int = 2, width: int = 64, embedding: int = 64
    ) -> None:
        super().__init__()
        if not 2 <= stages <= 4:
            raise ValueError("stages must be 2, 3 or 4")
        planes = [width * m // 64 for m in STAGE_PLANES[:stages]]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, planes[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(planes[0]),
            nn.ReLU(inplace=True),
        )
        layers = []
        prev = planes[0]
        for i, p in enumerate(planes):
            layers.append(_stage(prev, p, stride=2 if i == 1 else 1))
            prev = p
        self.layers = nn.Sequential(*layers)
        self.project = nn.Conv2d(prev, embedding, 1)
        self.stride = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, embedding, H/4, W/4)``."""
        return self.project(self.layers(self.stem(x)))
