"""The fixed information bottlenecks."""

from __future__ import annotations

import math

import pytest
import torch

from sparseseg.oneseg.bottleneck import (
    EdgeBottleneck,
    GaborBottleneck,
    IntensityBottleneck,
    gabor_kernels,
    make_bottleneck,
)


def test_gabor_bank_shape_and_zero_mean() -> None:
    kernels = gabor_kernels(3, 5)
    assert kernels.shape[:2] == (15, 1)
    assert kernels.shape[-1] % 2 == 1
    sums = kernels.sum(dim=(1, 2, 3))
    assert torch.allclose(sums, torch.zeros(15), atol=1e-5)


def test_gabor_ignores_constant_intensity_and_sees_orientation() -> None:
    bank = GaborBottleneck(scales=2, orientations=4)
    flat = torch.full((1, 1, 32, 32), 0.7)
    assert bank(flat).abs().max() < 1e-4  # zero-mean filters: no DC intensity gets through
    # Stripes along one direction excite one orientation more than the orthogonal one.
    x = torch.arange(32.0)
    stripes = (torch.sin(2 * math.pi * x / 5.0)[None, :].expand(32, 32))[None, None]
    energy = bank(stripes)[0, :4, 8:24, 8:24].abs().mean(dim=(1, 2))
    assert energy.max() > 3 * energy.min()


def test_gabor_is_not_learned() -> None:
    bank = GaborBottleneck()
    assert not list(bank.parameters())
    assert bank(torch.rand(2, 1, 20, 24)).shape == (2, 16, 20, 24)


def test_edge_profile_is_a_softmax_over_48_offsets() -> None:
    edge = EdgeBottleneck()
    out = edge(torch.rand(2, 1, 16, 16))
    assert out.shape == (2, 48, 16, 16)
    assert torch.allclose(out.sum(dim=1), torch.ones(2, 16, 16), atol=1e-5)


def test_intensity_is_identity_and_factory() -> None:
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(IntensityBottleneck()(x), x)
    assert make_bottleneck("edge").out_channels == 48
    assert make_bottleneck("gabor", scales=2, orientations=3).out_channels == 6
    with pytest.raises(ValueError, match="unknown bottleneck"):
        make_bottleneck("sobel")


@pytest.mark.parametrize("shape", [(3, 1, 128, 128), (2, 1, 37, 61)])
def test_gabor_fft_equals_direct_convolution(shape):
    torch.manual_seed(0)
    x = torch.rand(shape)
    fft, direct = GaborBottleneck(), GaborBottleneck(direct=True)
    got, want = fft(x), direct(x)
    assert got.shape == want.shape == (shape[0], 16, *shape[2:])
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item())


def test_fft_size_is_five_smooth_and_not_smaller():
    from sparseseg.oneseg.bottleneck import _fft_size

    assert [_fft_size(n) for n in (148, 149, 150, 151, 7, 1)] == [150, 150, 150, 160, 8, 1]
