"""Planes of a volume: orientation, display flips, pixel spacing, resampling indices."""

from __future__ import annotations

import numpy as np
import pytest

from sparseseg import viz
from sparseseg.viz import planes


def test_planes_are_oriented_and_spaced() -> None:
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert viz.plane(vol, "axial", 1).tolist() == vol[:, :, 1].T.tolist()
    coronal = viz.plane(vol, "coronal", 2)
    assert coronal.shape == (4, 2) and coronal[0, 0] == vol[0, 2, 3]  # top row = last k
    sagittal = viz.plane(vol, "sagittal", 1)
    assert sagittal.shape == (4, 3) and sagittal[-1, 2] == vol[1, 2, 0]
    assert viz.plane_spacing((1.0, 2.0, 3.0), "axial") == (2.0, 1.0)
    assert viz.plane_spacing((1.0, 2.0, 3.0), "coronal") == (3.0, 1.0)
    assert viz.plane_spacing((1.0, 2.0, 3.0), "sagittal") == (3.0, 2.0)
    with pytest.raises(ValueError, match="unknown view 'oblique'"):
        viz.plane(vol, "oblique", 0)


def test_display_flips_follow_the_direction_matrix() -> None:
    assert viz.display_flips(None) == (False, False, False)
    assert viz.display_flips(np.eye(3)) == (False, False, False)
    assert viz.display_flips(np.diag([-1.0, -1.0, 1.0])) == (True, True, False)
    assert viz.display_flips(np.diag([1.0, 1.0, -1.0])) == (False, False, True)
    permuted = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    assert viz.display_flips(permuted) == (False, False, False)  # shown in voxel axes
    assert viz.display_flips(np.eye(2)) == (False, False, False)  # not 3 x 3: no flips


def test_flipped_planes_and_slice_rows() -> None:
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    flipped = viz.plane(vol, "axial", 1, (True, True, False))
    assert flipped.tolist() == vol[::-1, ::-1, 1].T.tolist()
    coronal = viz.plane(vol, "coronal", 0, (False, False, True))
    assert coronal[0, 0] == vol[0, 0, 0]  # k reversed: slice 0 on top
    sagittal = viz.plane(vol, "sagittal", 0, (False, True, True))
    assert sagittal.tolist() == vol[0, ::-1, :].T.tolist()
    assert viz.slice_row(4, 0) == 3 and viz.slice_row(4, 0, (False, False, True)) == 0
    # The row slice_row names shows that slice in the plane, flipped or not.
    for flips in (viz.NO_FLIPS, (False, False, True)):
        for k in range(4):
            row = viz.plane(vol, "coronal", 1, flips)[viz.slice_row(4, k, flips)]
            assert row.tolist() == vol[:, 1, k].tolist()


def test_display_size_keeps_the_physical_aspect() -> None:
    assert viz.display_size((10, 20), (3.0, 1.0), 256) == (256, 171)
    assert viz.display_size((20, 117), (3.0, 3.0), 256) == (64, 256)  # stretched to 1/4
    assert viz.display_size((20, 117), (3.0, 3.0), 256, min_ratio=0.0) == (44, 256)
    assert viz.display_size((1, 1), (1.0, 1.0), 100) == (100, 100)


@pytest.mark.parametrize(("n_in", "n_out"), [(10, 256), (256, 10), (7, 7), (1, 5), (3, 8)])
def test_resize_indices_cover_the_axis_in_order(n_in: int, n_out: int) -> None:
    idx = viz.resize_indices(n_in, n_out)
    assert idx.shape == (n_out,) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() <= n_in - 1 and (np.diff(idx) >= 0).all()
    if n_out >= n_in:  # enlarging: every source pixel shown, in runs differing by at most 1
        assert idx[0] == 0 and idx[-1] == n_in - 1
        counts = np.bincount(idx, minlength=n_in)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1
    else:  # shrinking: each output pixel samples the middle of its stretch of the input
        assert (np.abs(idx + 0.5 - (np.arange(n_out) + 0.5) * n_in / n_out) <= 0.5).all()


def test_package_re_exports_the_plane_helpers() -> None:
    assert viz.plane is planes.plane and viz.VIEWS == ("axial", "coronal", "sagittal")
    assert viz.Flips is planes.Flips and viz.NO_FLIPS == (False, False, False)
