"""Training precision: choosing bf16 mixed precision or float32, and training under it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseseg import precision
from sparseseg.cli.main import main
from sparseseg.errors import SparsesegError
from sparseseg.oneseg.network import NetworkConfig, OneSegNet
from sparseseg.oneseg.training import OneSegTrainer, TrainConfig, reconstruction_loss
from sparseseg.precision import autocast, precision_name, resolve_precision

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not precision._cpu_bf16(), reason="no bfloat16 on this CPU")


def test_fp32_is_plain_float32() -> None:
    assert resolve_precision("fp32", CPU) is None
    assert precision_name(None) == "fp32"
    x = torch.rand(4, 4)
    with autocast(CPU, None):
        assert (x @ x).dtype == torch.float32


@pytest.mark.parametrize("amx", [True, False])
def test_auto_uses_bf16_only_on_cpus_with_amx(monkeypatch, amx: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "_cpu_bf16", lambda: True)  # emulated bf16 is not enough
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if amx else None)
    assert resolve_precision("AUTO", CPU) == resolve_precision("auto", CPU)


def test_bf16_where_missing_and_unknown_names_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(precision, "_cpu_bf16", lambda: False)
    with pytest.raises(SparsesegError, match="no bfloat16 support"):
        resolve_precision("bf16", CPU)
    with pytest.raises(SparsesegError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", CPU)


@needs_bf16
def test_bf16_autocast_runs_matrix_products_in_bf16() -> None:
    dtype = resolve_precision("bf16", CPU)
    assert dtype == torch.bfloat16 and precision_name(dtype) == "bf16"
    x = torch.rand(4, 4)
    with autocast(CPU, dtype):
        assert (x @ x).dtype == torch.bfloat16


@needs_bf16
def test_oneseg_bf16_loss_is_close_to_fp32_and_float32_valued() -> None:
    torch.manual_seed(0)
    net = OneSegNet(NetworkConfig(width=16, embedding=16, radius=3)).train()
    slices = torch.rand(3, 4, 1, 32, 32)
    kwargs = {"ss_weight": None, "cycle_weight": 0.1}
    exact = reconstruction_loss(net, *slices, **kwargs)
    with autocast(CPU, torch.bfloat16):
        mixed = reconstruction_loss(net, *slices, **kwargs)
    assert mixed.dtype == torch.float32
    assert abs(mixed.item() - exact.item()) < 0.05 * exact.item()


@needs_bf16
def test_oneseg_training_in_bf16_keeps_float32_weights_and_records_it() -> None:
    volumes = [torch.rand(6, 1, 32, 32) for _ in range(2)]
    config = TrainConfig(epochs=1, pairs_per_epoch=8, batch_size=4, size=32, clusters=2,
                         precision="bf16")
    trainer = OneSegTrainer(volumes, network=NetworkConfig(width=16, embedding=16, radius=3),
                            config=config, device=CPU)
    before = [p.detach().clone() for p in trainer.net.parameters()]
    losses = []
    trainer.fit(lambda state: losses.append(state.loss))
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.net.parameters(), strict=True))
    assert trainer.record()["precision"] == "bf16"
    assert trainer.record()["precision_used"] == "bf16"


def test_cli_refuses_bf16_without_support(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(precision, "_cpu_bf16", lambda: False)
    code = main(["-q", "oneseg", "train", "-i", str(tmp_path), "-o", str(tmp_path / "m"),
                 "--precision", "bf16", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "sparseseg: error: --precision bf16 asked for, but cpu has no bfloat16 support"]
    assert not (tmp_path / "m").exists()
