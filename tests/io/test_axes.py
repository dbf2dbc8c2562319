"""The slice axis is the third voxel axis, in one place."""

from __future__ import annotations

import numpy as np
import pytest

from sparseseg.io.axes import SLICE_AXIS, from_slices, to_slices


def test_slice_axis_is_third_voxel_axis() -> None:
    assert SLICE_AXIS == 2
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    slices = to_slices(vol)
    assert slices.shape == (6, 4, 5)
    for k in range(6):
        np.testing.assert_array_equal(slices[k], vol[:, :, k])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip(axis: int) -> None:
    vol = np.random.default_rng(axis).normal(size=(3, 4, 5))
    back = from_slices(to_slices(vol, axis), axis)
    np.testing.assert_array_equal(back, vol)
    assert to_slices(vol, axis).shape[0] == vol.shape[axis]


def test_to_slices_is_a_view() -> None:
    vol = np.zeros((3, 4, 5))
    to_slices(vol)[2, 1, 0] = 7.0
    assert vol[1, 0, 2] == 7.0


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5)])
def test_refuses_non_3d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="3D"):
        to_slices(np.zeros(shape))
    with pytest.raises(ValueError, match="3D"):
        from_slices(np.zeros(shape))
