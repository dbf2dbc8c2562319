"""Test-time adaptation of the batch-norm statistics to one volume (AdaBN).

The feature extractor's batch-norm layers normalise with the mean and variance of the slices
it was trained on (the default model: 82 MR and CT volumes at once). A scan of another kind
(another contrast, field of view, slice thickness) shifts those statistics, and every later
layer sees inputs off the range it learned. Re-estimating them on the volume to segment
(Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation", 2016) is the
cheapest test-time adaptation there is: one pass of the volume's slices through the network,
no labels, no gradient, no weight moved. The slices go in shuffled batches (a fixed seed), so
that each batch's variance is that of the whole volume rather than of a few neighbouring
slices; the running averages are PyTorch's :func:`torch.optim.swa_utils.update_bn`.

Measured with the default model, each structure from one slice, mean Dice (docs/benchmarks.md):
AbdomenTS CT 0.705 -> 0.709, MR 0.783 -> 0.799, Cardiac (10 volumes x 3 structures)
0.707 -> 0.717, LeftAtrium (10 held-out cases) 0.827 -> 0.829. Unlike OneSeg's own loss
(``mode="self"``, :mod:`sparseseg.oneseg.adaptation`) it does not lose on any of them.
"""

from __future__ import annotations

import copy
import logging
import time

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from sparseseg.oneseg.model import OneSegModel

log = logging.getLogger(__name__)

NORM_BATCH = 16
"""Slices per forward pass while the statistics are gathered."""


def norm_layers(net: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of a network."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_norm(
    model: OneSegModel,
    slices: torch.Tensor,
    *,
    batch_size: int = NORM_BATCH,
    seed: int = 0,
) -> OneSegModel:
    """A copy of ``model`` whose batch-norm statistics are those of ``slices``.

    Args:
        model: The model to start from (not modified).
        slices: The volume's prepared slices ``(N, 1, S, S)`` (``model.slice_tensors``).
        batch_size: Slices per forward pass.
        seed: Seed of the order the slices are drawn in.

    Returns:
        The adapted model (evaluation mode), with an ``adapted`` record in its ``extra``
        settings.

    Raises:
        ValueError: Fewer than two slices, a batch size below 2, or a network without
            batch-norm layers.
    """
    n = len(slices)
    if n < 2:
        raise ValueError("adaptation needs a volume with at least two slices")
    if batch_size < 2:
        raise ValueError(f"batch statistics need at least 2 slices per batch, got {batch_size}")
    start = time.monotonic()
    net = copy.deepcopy(model.net)
    if not norm_layers(net):
        raise ValueError("the network has no batch-norm layer to adapt")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # a lone slice has no spread of its own
        batches[-2] = torch.cat(batches[-2:])
        batches.pop()
    update_bn((slices[b] for b in batches), net)
    net.eval()
    seconds = time.monotonic() - start
    log.info("re-estimated the batch-norm statistics on %d slices in %.1f s", n, seconds)
    record = {"mode": "norm", "slices": n, "batch_size": batch_size, "seed": seed,
              "seconds_used": round(seconds, 2)}
    return OneSegModel(net, size=model.size, device=model.device,
                       extra={**model.extra, "adapted": record})
