"""Fixtures of the LTUDA tests: tiny phantom datasets written to a temp folder."""

from __future__ import annotations

import pytest
import torch

from sparseseg.data import make_phantom_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def phantom_sets(tmp_path_factory):
    """Two phantom datasets of 3 small cases each: ``(liver_set, spleen_kidney_set)``."""
    root = tmp_path_factory.mktemp("phantoms")
    a = make_phantom_dataset(root / "A", n_cases=3, shape=(40, 36, 6), seed=0)
    b = make_phantom_dataset(root / "B", n_cases=3, shape=(40, 36, 6), seed=10)
    return a, b
