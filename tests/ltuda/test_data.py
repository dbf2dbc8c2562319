import numpy as np
import pytest

from sparseseg.errors import SparsesegError
from sparseseg.ltuda.data import (
    SliceCase,
    SliceSampler,
    load_cases,
    split_validation,
    subject_pattern,
)
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


def _frames(n_patients=5):
    return [_case(f"patient{p:03d}_frame{f:02d}", 0, [True, False])
            for p in range(n_patients) for f in (1, 2)]


def test_split_case_by_case_by_default():
    # without a subject every case is drawn on its own, as it always was
    cases = _frames()
    train, val = split_validation(cases, 0.2, np.random.default_rng(0))
    order = np.random.default_rng(0).permutation(len(cases))
    assert val == [cases[i] for i in order[:2]]
    assert train == [cases[i] for i in order[2:]]


@pytest.mark.parametrize("seed", range(5))
def test_split_keeps_a_patients_frames_on_one_side(seed):
    cases = _frames()
    train, val = split_validation(cases, 0.2, np.random.default_rng(seed),
                                  subject=subject_pattern(r"patient\d+"))
    patients = {c.name[:10] for c in val}
    assert len(patients) == 1 and len(val) == 2  # a fifth of the 5 patients, both frames
    assert not patients & {c.name[:10] for c in train}
    assert len(train) == 8


def test_subject_pattern_takes_the_first_group_and_keeps_unmatched_names_apart():
    assert subject_pattern(r"patient\d+")("patient012_frame01") == "patient012"
    assert subject_pattern(r"^([^_]+)_")("sub-07_ses-2") == "sub-07"
    subject = subject_pattern(r"patient\d+")
    assert subject("case_a") != subject("case_b")
    assert subject("case_a") != subject("patient001")
    with pytest.raises(SparsesegError, match="val_group"):
        subject_pattern("patient(")


def test_load_cases_masks_and_resizes(phantom_sets):
    spec = DatasetSpec(phantom_sets[0], {"spleen": [2], "kidney": [3]})
    cases = load_cases([spec], ["liver", "spleen", "kidney"], 16)
    assert len(cases) == 3
    case = cases[0]
    assert case.image.shape == (6, 16, 16) and case.target.shape == (6, 3, 16, 16)
    assert case.labeled.tolist() == [False, True, True]
    assert case.target[:, 0].sum() == 0 and case.target[:, 1].sum() > 0
