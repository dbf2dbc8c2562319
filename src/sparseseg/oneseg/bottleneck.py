"""Information bottlenecks: fixed (not learned) filters applied before the encoder.

OneSeg feeds the encoder a Gabor filter bank's responses instead of raw intensities, so the
network must match slices by edges and texture rather than by grey values (paper Sec. 1.3).
The alternatives exist for the paper's ablation: raw ``intensity`` (no bottleneck) and Sli2Vol's
``edge`` profile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BOTTLENECKS = ("gabor", "edge", "intensity")


def gabor_kernels(scales: int = 4, orientations: int = 4) -> torch.Tensor:
    """Real (even) Gabor kernels, zero-mean and unit-L1, one per scale and orientation.

    Scale ``s`` uses ``sigma = 1 + s`` pixels and wavelength ``lambda = 2.5 * sigma``;
    orientations are spread evenly over ``[0, pi)``.

    Args:
        scales: Number of scales S.
        orientations: Number of orientations O.

    Returns:
        Tensor of shape ``(S * O, 1, K, K)`` with ``K`` odd, fitting the largest scale.
    """
    max_sigma = float(scales)
    half = int(math.ceil(2.5 * max_sigma))
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    kernels = []
    for s in range(scales):
        sigma = 1.0 + s
        wavelength = 2.5 * sigma
        for o in range(orientations):
            theta = math.pi * o / orientations
            xr = xx * math.cos(theta) + yy * math.sin(theta)
            yr = -xx * math.sin(theta) + yy * math.cos(theta)
            envelope = torch.exp(-(xr**2 + (0.5 * yr) ** 2) / (2 * sigma**2))
            kernel = envelope * torch.cos(2 * math.pi * xr / wavelength)
            kernel = kernel - kernel.sum() / envelope.sum() * envelope
            kernels.append(kernel / kernel.abs().sum())
    return torch.stack(kernels)[:, None].float()


class GaborBottleneck(nn.Module):
    """Fixed Gabor filter bank: ``(B, 1, H, W)`` -> ``(B, S*O, H, W)``.

    The filters are large (21 x 21 for 4 scales), so they are applied by FFT: on a CPU the
    direct convolution took 44 % of the feature extractor's time, the FFT a few percent. Both
    compute the same cross-correlation of the reflect-padded slice (equal to float32
    rounding, about 1e-6 of the responses' range; ``direct=True`` selects the convolution).

    Args:
        scales: Number of scales.
        orientations: Number of orientations.
        direct: Convolve directly instead of by FFT.
    """

    def __init__(self, *, scales: int = 4, orientations: int = 4, direct: bool = False) -> None:
        super().__init__()
        self.register_buffer("weight", gabor_kernels(scales, orientations), persistent=False)
        self.out_channels = scales * orientations
        self.direct = direct
        self._spectra: dict[tuple, torch.Tensor] = {}

    def _spectrum(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Conjugate spectra of the kernels zero-padded to ``size`` (cached per size)."""
        key = (size, str(device))
        if key not in self._spectra:
            k = self.weight.shape[-1]
            padded = torch.zeros(self.out_channels, size[0], size[1], device=device)
            padded[:, :k, :k] = self.weight[:, 0].to(device=device, dtype=torch.float32)
            self._spectra[key] = torch.fft.rfft2(padded).conj()
        return self._spectra[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.weight.shape[-1] // 2
        h, w = x.shape[-2:]
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        # Responses are small (unit-L1 kernels on [0, 1] images): bring them to unit scale.
        if self.direct:
            return F.conv2d(x, self.weight) * 8.0
        # Circular cross-correlation of the padded slice, zero-padded further to a size the
        # FFT is fast at: outputs 0..H-1 never wrap around.
        size = (_fft_size(x.shape[-2]), _fft_size(x.shape[-1]))
        spectrum = torch.fft.rfft2(x.float(), s=size) * self._spectrum(size, x.device)
        return torch.fft.irfft2(spectrum, s=size)[..., :h, :w] * 8.0


def _fft_size(n: int) -> int:
    """The smallest ``m >= n`` whose only prime factors are 2, 3 and 5 (fast FFT lengths)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


class EdgeBottleneck(nn.Module):
    """Sli2Vol's edge profile: softmax over a 7x7 patch of differences to each neighbour.

    ``(B, 1, H, W)`` -> ``(B, 48, H, W)``; out-of-image neighbours take the border value.

    Args:
        radius: Patch radius (3 gives the 7x7 patch and 48 offsets).
        temperature: Softmax temperature on the (intensity-scaled) differences.
    """

    def __init__(self, *, radius: int = 3, temperature: float = 0.05) -> None:
        super().__init__()
        self.radius = radius
        self.temperature = temperature
        self.out_channels = (2 * radius + 1) ** 2 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        size = 2 * r + 1
        b, _, h, w = x.shape
        patches = F.unfold(F.pad(x, (r, r, r, r), mode="replicate"), size)  # (B, size^2, H*W)
        centre = (size * size) // 2
        keep = [i for i in range(size * size) if i != centre]
        diff = -(patches[:, keep] - x.reshape(b, 1, h * w)).abs()
        return torch.softmax(diff / self.temperature, dim=1).reshape(b, len(keep), h, w)


class IntensityBottleneck(nn.Module):
    """No bottleneck: the encoder sees the normalised intensity itself (ablation)."""

    out_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_bottleneck(name: str, *, scales: int = 4, orientations: int = 4) -> nn.Module:
    """Build a bottleneck by name: ``gabor``, ``edge`` or ``intensity``."""
    if name == "gabor":
        return GaborBottleneck(scales=scales, orientations=orientations)
    if name == "edge":
        return EdgeBottleneck()
    if name == "intensity":
        return IntensityBottleneck()
    raise ValueError(f"unknown bottleneck {name!r}; choose from {', '.join(BOTTLENECKS)}")
