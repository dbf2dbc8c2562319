"""Segmenting volumes with a trained LTUDA model folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparseseg.checkpoint import load_model
from sparseseg.errors import ModelError
from sparseseg.io import Volume, from_slices, to_slices
from sparseseg.ltuda.data import prepare_image, resize_slices
from sparseseg.ltuda.model import LTUDAModel
from sparseseg.ltuda.postprocess import keep_largest_components
from sparseseg.ltuda.trainer import predict_slices

KIND = "ltuda"


def build_model(config: Mapping[str, Any]) -> LTUDAModel:
    """Rebuild the network described by a model folder's ``config.json``."""
    try:
        return LTUDAModel(
            n_organs=len(config["organs"]),
            base_channels=int(config["base_channels"]),
            depth=int(config["depth"]),
            embed_dim=int(config.get("embed_dim", 64)),
            n_prototypes=int(config.get("n_prototypes", 5)),
            temperature=float(config.get("temperature", 0.1)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"config.json lacks or garbles a setting ({exc})") from None


def load_ltuda(folder: str | Path, device: torch.device) -> tuple[dict, LTUDAModel]:
    """Read a model folder and return ``(config, model on device in eval mode)``."""
    config, state = load_model(folder, kind=KIND)
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"weights do not match config.json ({str(exc).splitlines()[0]})",
                         folder) from None
    return config, model.to(device).eval()


def segment_volume(
    model: LTUDAModel, volume: Volume, config: Mapping[str, Any], device: torch.device,
    *, classifier: str | None = None,
) -> np.ndarray:
    """Label map (uint8, organ k at k) of a volume on its own grid.

    Slices are normalised and resized to the network size; the class scores are resized back
    to the original slice size before deciding, then the largest connected components of each
    organ are kept (``config["components"]``: organ name -> count, default 1).
    """
    size = int(config["size"])
    classifier = classifier or config.get("classifier", "unlabeled")
    slices = prepare_image(volume.array, size)
    scores = predict_slices(model, slices, classifier, device)
    original = to_slices(volume.array).shape[1:]
    labels = resize_slices(scores, original).argmax(1).numpy().astype(np.uint8)
    labels = from_slices(labels)
    organs = list(config["organs"])
    counts = {k + 1: int(config.get("components", {}).get(name, 1))
              for k, name in enumerate(organs)}
    return keep_largest_components(labels, counts)
