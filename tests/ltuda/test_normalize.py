import numpy as np

from sparseseg.ltuda.normalize import normalize_intensity


def test_scale_invariant_and_robust():
    rng = np.random.default_rng(0)
    mri = rng.gamma(2.0, 100.0, (20, 20, 5))
    a = normalize_intensity(mri)
    b = normalize_intensity(mri * 37.0 + 5.0)
    assert np.allclose(a, b, atol=1e-4)
    assert abs(a.mean()) < 1e-4 and abs(a.std() - 1) < 1e-3
    ct = mri.copy()
    ct[0, 0, 0] = 1e6  # outlier clipped away
    assert normalize_intensity(ct).max() < 10
    assert not normalize_intensity(np.full((3, 3, 3), 5.0)).any()
