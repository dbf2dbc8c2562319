import numpy as np

from sparseseg.ltuda.data import SliceCase, SliceSampler, load_cases, split_validation
from sparseseg.ltuda.spec import DatasetSpec


def _case(name, dataset, labeled):
    return SliceCase(name, dataset, np.zeros((2, 8, 8), np.float32),
                     np.zeros((2, 2, 8, 8), np.uint8), np.array(labeled))


def test_split_and_sampler_mix_datasets():
    cases = [_case(f"a{i}", 0, [True, False]) for i in range(5)]
    cases += [_case(f"b{i}", 1, [False, True]) for i in range(2)]
    rng = np.random.default_rng(0)
    train, val = split_validation(cases, 0.2, rng)
    assert sorted(c.dataset for c in val) == [0, 1]  # every dataset keeps one out
    assert not {c.name for c in train} & {c.name for c in val}
    images, targets, labeled = SliceSampler(train, 4, rng).batch()
    assert images.shape == (4, 1, 8, 8) and targets.shape == (4, 2, 8, 8)
    assert labeled.sum(0).tolist() == [2.0, 2.0]  # both datasets in every batch


def test_load_cases_masks_and_resizes(phantom_sets):
    spec = DatasetSpec(phantom_sets[0], {"spleen": [2], "kidney": [3]})
    cases = load_cases([spec], ["liver", "spleen", "kidney"], 16)
    assert len(cases) == 3
    case = cases[0]
    assert case.image.shape == (6, 16, 16) and case.target.shape == (6, 3, 16, 16)
    assert case.labeled.tolist() == [False, True, True]
    assert case.target[:, 0].sum() == 0 and case.target[:, 1].sum() > 0
