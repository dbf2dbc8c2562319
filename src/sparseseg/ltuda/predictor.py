"""Segmenting volumes with a trained LTUDA model folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparseseg.io import Volume, from_slices, to_slices
from sparseseg.ltuda.data import prepare_image, resize_slices
from sparseseg.ltuda.evaluate import predict_slices
from sparseseg.ltuda.model import DEFAULT_CLASSIFIER, LTUDAModel
from sparseseg.ltuda.postprocess import keep_largest_components


def load_ltuda(folder: str | Path, device: torch.device) -> tuple[dict, LTUDAModel]:
    """Read a model folder and return ``(config, model on device in eval mode)``.

    Raises:
        ModelError: See :meth:`LTUDAModel.load`.
    """
    model = LTUDAModel.load(folder, device=device)
    return model.config, model


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
    classifier = classifier or config.get("classifier", DEFAULT_CLASSIFIER)
    slices = prepare_image(volume.array, size)
    scores = predict_slices(model, slices, classifier, device)
    original = to_slices(volume.array).shape[1:]
    # max(1).indices: the same first-maximum index as argmax(1), ~8x faster over the class
    # axis of a CPU (N, C, H, W) tensor.
    labels = resize_slices(scores, original).max(1).indices.numpy().astype(np.uint8)
    labels = from_slices(labels)
    organs = list(config["organs"])
    counts = {k + 1: int(config.get("components", {}).get(name, 1))
              for k, name in enumerate(organs)}
    return keep_largest_components(labels, counts)
