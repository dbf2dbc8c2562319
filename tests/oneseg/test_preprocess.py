"""Intensity normalisation for CT in HU and MRI of any scale."""

from __future__ import annotations

import numpy as np

from sparseseg.oneseg.preprocess import normalise_intensity


def test_constant_volume_gives_zeros_not_nan() -> None:
    out = normalise_intensity(np.full((6, 5, 4), 300.0))
    assert out.dtype == np.float32 and np.all(out == 0)


def test_scale_free_and_background_ignored() -> None:
    rng = np.random.default_rng(0)
    tissue = rng.normal(50, 20, (20, 20, 10))
    ct = np.where(np.arange(20)[:, None, None] < 8, -1000.0, tissue)  # air on one side
    a = normalise_intensity(ct)
    b = normalise_intensity(ct * 7 + 3)
    assert np.allclose(a, b, atol=1e-5)
    assert a.min() >= 0 and a.max() <= 1
    # Tissue spreads over most of [0, 1] instead of a narrow band above the air.
    assert np.ptp(a[8:]) > 0.9
