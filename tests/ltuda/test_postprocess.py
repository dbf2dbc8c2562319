import numpy as np

from sparseseg.ltuda.postprocess import keep_largest_components


def test_keeps_largest_components_per_label():
    labels = np.zeros((10, 10, 3), np.uint8)
    labels[0:4, 0:4] = 1  # big liver
    labels[8:9, 8:9] = 1  # speck of liver
    labels[0:3, 6:9] = 3  # kidney 1
    labels[6:8, 0:2] = 3  # kidney 2 (smaller)
    labels[9, 0] = 3  # speck of kidney
    one = keep_largest_components(labels)
    assert (one == 1).sum() == 48 and (one == 3).sum() == 27
    two = keep_largest_components(labels, {3: 2})
    assert (two == 3).sum() == 27 + 12 and two[9, 0, 0] == 0 and (two == 1).sum() == 48
    keep_all = keep_largest_components(labels, {1: 0})
    assert (keep_all == 1).sum() == 51
