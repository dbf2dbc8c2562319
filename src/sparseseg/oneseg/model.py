"""A trained OneSeg model: network, preprocessing settings, and its model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sparseseg.checkpoint import load_model, save_model
from sparseseg.errors import InputError, ModelError, first_line
from sparseseg.io.axes import slice_shape
from sparseseg.oneseg.network import NetworkConfig, OneSegNet
from sparseseg.oneseg.preprocess import volume_to_slices

KIND = "oneseg"
DEFAULT_MODEL_DIR = Path(__file__).with_name("default_model")
"""The model shipped in the package (``MODEL_CARD.md`` beside it says how it was trained); the
OneSeg commands use it when no model is given."""
MIN_SLICE_PIXELS = 8
"""Smallest in-plane size (pixels per side) a volume may have."""


def check_volume(array: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse arrays no propagator can use: not 3D, or too small in-plane.

    Raises:
        InputError: Naming ``path`` and the problem.
    """
    if array.ndim != 3:
        raise InputError(f"is {array.ndim}D; expected a 3D volume", path)
    if min(slice_shape(array.shape)) < MIN_SLICE_PIXELS:
        raise InputError(
            f"volume of shape {array.shape} is too small (slices need at least "
            f"{MIN_SLICE_PIXELS} x {MIN_SLICE_PIXELS} pixels)",
            path,
        )


PROPAGATION_TEMPERATURE = 0.03
"""Softmax temperature of the label copy at test time (recorded in ``config.json`` at training;
a folder without it uses this value). Sharper than training's 0.05: a soft copy blurs the
label a little at every step, and the blur compounds along the chain. Measured on
LeftAtrium, largest-slice start: 0.779 mean Dice at 0.05, 0.810 at 0.04, 0.829 at 0.03, 0.758
at 0.015 (model trained with neighbour chains; without them the best was 0.02)."""


class OneSegModel:
    """The feature extractor with the slice size it was trained at.

    Args:
        net: The network.
        size: In-plane size slices are resized to.
        device: Where to compute.
        extra: Other settings to keep in ``config.json`` (training record).
    """

    def __init__(
        self,
        net: OneSegNet,
        *,
        size: int,
        device: torch.device | str = "cpu",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.size = int(size)
        self.extra = dict(extra or {})
        self.propagation_temperature = float(
            self.extra.get("propagation_temperature", PROPAGATION_TEMPERATURE)
        )

    # ----------------------------------------------------------------- persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``folder`` atomically."""
        config = {"size": self.size, "network": self.net.config.to_dict(), **self.extra}
        return save_model(folder, kind=KIND, config=config, state=self.net.state_dict())

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str = "cpu") -> OneSegModel:
        """Load a model folder (safetensors + JSON; nothing is unpickled or executed).

        Raises:
            ModelError: The folder is missing, corrupt, of another kind, or does not match
                the network its config describes.
        """
        config, state = load_model(folder, kind=KIND)
        try:
            net_config = NetworkConfig.from_dict(config["network"])
            net = OneSegNet(net_config)
            net.load_state_dict(state, strict=True)
            size = int(config["size"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"config and weights do not match ({first_line(exc)})",
                             folder) from None
        extra = {k: v for k, v in config.items() if k not in {"size", "network"}}
        return cls(net, size=size, device=device, extra=extra)

    # ----------------------------------------------------------------- features
    @torch.no_grad()
    def slice_tensors(self, array: np.ndarray) -> torch.Tensor:
        """Normalised, resized slices ``(N, 1, S, S)`` on the model's device."""
        return volume_to_slices(array, size=self.size).to(self.device)

    @torch.no_grad()
    def features(self, slices: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """Dense features ``(N, E, S/4, S/4)`` of prepared slices.

        Args:
            slices: Prepared slices (:meth:`slice_tensors`).
            batch_size: Slices per forward pass. Default: 8 on a CPU, where small batches
                stay in cache (88 LeftAtrium slices, one thread: 0.78 s at 8, 1.29 s at 32),
                32 on a GPU.
        """
        self.net.eval()
        if batch_size is None:
            batch_size = 8 if slices.device.type == "cpu" else 32
        return self.net.embed_slices(slices, batch_size=batch_size)

    @staticmethod
    def pooled(features: torch.Tensor, grid: int | None = None) -> np.ndarray:
        """Slice descriptors for screening: feature maps flattened, optionally average-pooled
        to ``grid x grid`` first.

        The cosine similarity of two flattened maps compares slices location by location, as
        Eq. 2 and 5 of the paper write it; pooling to a coarse grid discards the layout and
        (measured on LeftAtrium) moves the selected slice out of the organ far more often.
        """
        if grid is not None:
            features = F.adaptive_avg_pool2d(features, grid)
        return features.flatten(1).cpu().numpy()
