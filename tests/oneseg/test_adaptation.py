"""Test-time adaptation: a fine-tuned copy, the original untouched, the budget kept."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseseg import oneseg
from sparseseg.cli.main import main
from sparseseg.errors import InputError
from sparseseg.io import read_label, read_volume
from sparseseg.oneseg.adaptation import AdaptConfig, adapt_model
from sparseseg.oneseg.model import OneSegModel


def _state(model: OneSegModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def test_adapt_returns_a_trained_copy_and_keeps_the_original(tiny_model: Path,
                                                             phantom_folder: Path) -> None:
    model = OneSegModel.load(tiny_model)
    before = _state(model)
    image = read_volume(phantom_folder / "image.nii.gz")
    start = time.monotonic()
    adapted = adapt_model(model, model.slice_tensors(image.array),
                          config=AdaptConfig(seconds=2.0, seed=0))
    took = time.monotonic() - start
    assert adapted is not model and adapted.net is not model.net
    # The original is untouched.
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    after = adapted.net.state_dict()
    moved = [n for n, t in after.items() if t.is_floating_point() and not torch.equal(t, before[n])]
    assert moved, "adaptation changed no weight"
    # Batch-norm statistics stay frozen: only weights move.
    stats = [n for n in after if n.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(after[n], before[n]) for n in stats)
    assert adapted.extra["adapted"]["steps"] >= 1
    assert took < 2.0 + 10.0  # the budget, plus one step and the set-up on a slow machine
    assert not adapted.net.training


def test_adapt_refuses_bad_budgets(tiny_model: Path, phantom_folder: Path) -> None:
    model = OneSegModel.load(tiny_model)
    slices = model.slice_tensors(read_volume(phantom_folder / "image.nii.gz").array)
    with pytest.raises(ValueError, match="positive time budget"):
        adapt_model(model, slices, config=AdaptConfig(seconds=0))
    with pytest.raises(ValueError, match="two slices"):
        adapt_model(model, slices[:1], config=AdaptConfig(seconds=1))
    with pytest.raises(InputError, match="positive number of seconds"):
        oneseg.adapt(model=model, image=phantom_folder / "image.nii.gz", seconds=-1)


def test_cli_propagate_with_adapt(tiny_model: Path, phantom_folder: Path, tmp_path: Path) -> None:
    label = read_label(phantom_folder / "label.nii.gz")
    ann = np.zeros_like(label.array)
    ann[:, :, 10] = label.array[:, :, 10]
    from sparseseg.io import write_volume

    ann_path = write_volume(tmp_path / "ann.nii.gz", ann, label)
    out = tmp_path / "out.nii.gz"
    code = main(["oneseg", "propagate", "-m", str(tiny_model), "-i",
                 str(phantom_folder / "image.nii.gz"), "-a", str(ann_path), "-o", str(out),
                 "--adapt", "1", "-q"])
    assert code == 0
    result = read_label(out).array
    assert np.array_equal(result[:, :, 10], ann[:, :, 10])  # the annotated slice is kept
    assert (result[:, :, 9] > 0).any() and (result[:, :, 11] > 0).any()


def test_cli_adapt_with_a_method_without_model_is_refused(phantom_folder: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.nii.gz"
    code = main(["oneseg", "propagate", "--method", "registration", "-i",
                 str(phantom_folder / "image.nii.gz"), "-a", str(phantom_folder / "label.nii.gz"),
                 "-o", str(out), "--adapt", "5", "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("sparseseg: error: --adapt fine-tunes the OneSeg model; method "
                   "'registration' has none")
    assert not out.exists()
