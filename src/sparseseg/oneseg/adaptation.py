"""Test-time adaptation: fine-tune a copy of a OneSeg model on the volume to segment.

OneSeg's training needs no labels, so the network can keep training on the very volume a user
annotates: the same reconstruction loss (screened pairs plus short neighbour chains, scheduled
sampling, cycle consistency; :mod:`sparseseg.oneseg.training`) on that volume's own slices, for
a fixed time budget, starting from the given model's weights. The given model is left as it
was; the adapted copy is used for this volume only.

Batch-norm statistics are kept frozen (the layers stay in evaluation mode) while the weights
move, with a small learning rate: they are what the rest of the network was trained with.
Re-estimating them on the volume, with no weight moved, is a mode of its own
(:mod:`sparseseg.oneseg.norm_adaptation`), and the better one measured.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sparseseg.oneseg.model import OneSegModel
from sparseseg.oneseg.norm_adaptation import norm_layers
from sparseseg.oneseg.training import OneSegTrainer, TrainConfig, TrainState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of test-time adaptation.

    Args:
        seconds: Time budget (screening included).
        lr: Adam learning rate (constant: the run is short).
        batch_size: Samples per step.
        local_chains: Short neighbour chains added to the screened pairs.
        seed: Random seed.
    """

    seconds: float = 30.0
    lr: float = 2e-5
    batch_size: int = 8
    local_chains: int = 12
    seed: int = 0


class _FrozenNormTrainer(OneSegTrainer):
    """The OneSeg trainer with every batch-norm layer kept in evaluation mode."""

    def _freeze_norm(self) -> None:
        for module in norm_layers(self.net):
            module.eval()

    def _loss(self, prev: torch.Tensor, ref: torch.Tensor, tgt: torch.Tensor,
              ss_weight: float) -> torch.Tensor:
        self._freeze_norm()
        return super()._loss(prev, ref, tgt, ss_weight)


def adapt_model(
    model: OneSegModel,
    slices: torch.Tensor,
    *,
    config: AdaptConfig | None = None,
    callback: Callable[[TrainState], None] | None = None,
) -> OneSegModel:
    """A copy of ``model`` fine-tuned self-supervised on one volume's slices.

    Args:
        model: The model to start from (not modified).
        slices: The volume's prepared slices ``(N, 1, S, S)`` (``model.slice_tensors``).
        config: Adaptation settings (default :class:`AdaptConfig`).
        callback: Called after every step with a :class:`~sparseseg.oneseg.training.TrainState`.

    Returns:
        The adapted model, with an ``adapted`` record in its ``extra`` settings.

    Raises:
        ValueError: Fewer than two slices, or a budget that is not positive.
    """
    cfg = config or AdaptConfig()
    if cfg.seconds <= 0:
        raise ValueError(f"adaptation needs a positive time budget, got {cfg.seconds} s")
    if len(slices) < 2:
        raise ValueError("adaptation needs a volume with at least two slices")
    training = TrainConfig(
        epochs=1,
        pairs_per_epoch=10**6,  # the time budget ends the run
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        size=model.size,
        local_chains=cfg.local_chains,
        max_time=cfg.seconds / 60.0,
        seed=cfg.seed,
        precision="fp32",
    )
    start = time.monotonic()
    device = model.device
    trainer = _FrozenNormTrainer([slices.detach().to("cpu")], network=model.net.config,
                                 config=training, device=device)
    trainer.net.load_state_dict(copy.deepcopy(model.net.state_dict()))
    net = trainer.fit(callback)
    net.eval()
    seconds = time.monotonic() - start
    log.info("adapted the model on the volume: %d steps in %.1f s", trainer.step, seconds)
    extra = {**model.extra, "adapted": {"steps": trainer.step, "seconds": round(seconds, 1),
                                        "lr": cfg.lr, "seed": cfg.seed}}
    return OneSegModel(net, size=model.size, device=device, extra=extra)
