"""Prediction with an LTUDA model folder: loading it, and what inference imports."""

from __future__ import annotations

import subprocess
import sys

import torch

from sparseseg.ltuda.model import LTUDAModel
from sparseseg.ltuda.predictor import load_ltuda


def test_load_ltuda_returns_the_config_and_the_model_in_eval_mode(tmp_path) -> None:
    torch.manual_seed(0)
    folder = LTUDAModel(n_organs=1, base_channels=4, depth=2).save(
        tmp_path / "m", organs=["liver"], size=16, classifier="linear")
    config, model = load_ltuda(folder, torch.device("cpu"))
    assert config["classifier"] == "linear" and config["organs"] == ["liver"]
    assert model.config is config and not model.training


def test_inference_does_not_import_the_trainer() -> None:
    code = ("import sys, sparseseg.ltuda.predictor, sparseseg.ltuda.api; "
            "print(sorted(m for m in sys.modules if m in ('sparseseg.ltuda.trainer', "
            "'sparseseg.training_loop')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
