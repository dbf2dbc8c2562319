"""The full LTUDA model: U-Net, projection head, the two prototype classifiers; its folder.

A model folder (:mod:`sparseseg.checkpoint`) holds ``model.safetensors`` and ``config.json``.
:meth:`LTUDAModel.save` and :meth:`LTUDAModel.load` own the keys of ``config.json`` that
describe the model:

* ``organs`` (names; organ ``k`` is label ``k + 1`` of a prediction) and ``size`` (the slices'
  in-plane size);
* the network: ``base_channels``, ``depth``, ``embed_dim``, ``n_prototypes``, ``temperature``
  (the last three default to 64, 5 and 0.1 when absent);
* for prediction: ``classifier`` (default ``unlabeled``) and ``components`` (organ name ->
  connected components kept, default 1);
* how slices are prepared (``normalization``, ``slice_axis``; descriptions, for people);

next to records of how it was trained (``method``, ``training``, ``best_epoch``,
``val_dice``...), which are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseseg.checkpoint import load_model, save_model
from sparseseg.errors import ModelError
from sparseseg.ltuda.network import ProjectionHead, UNet2D
from sparseseg.ltuda.prototypes import PrototypeClassifier

KIND = "ltuda"
"""Model family of LTUDA model folders."""

CLASSIFIERS = ("linear", "labeled", "unlabeled")
"""Linear threshold classifier, labeled-prototype and unlabeled-prototype classifiers."""

DEFAULT_CLASSIFIER = "unlabeled"
"""The classifier a model folder without ``classifier`` predicts with (the paper's choice)."""

NORMALIZATION = "per-volume clip to 0.5-99.5 percentiles, then z-score"
"""How slices are normalised (:func:`sparseseg.ltuda.data.prepare_image`), as recorded."""

SLICE_AXIS = "third voxel axis (sparseseg.io.SLICE_AXIS)"
"""Along which axis volumes are sliced, as recorded."""


class LTUDAModel(nn.Module):
    """U-Net with sigmoid organ channels, plus the prototype branch of LTUDA's stage 2.

    Args:
        n_organs: Organ channels.
        base_channels: U-Net width.
        depth: U-Net down-sampling steps.
        embed_dim: Projection size (64 in the paper).
        n_prototypes: Prototypes per class, background included (5 in the paper).
        temperature: Cosine logits are divided by it to give class probabilities.
    """

    def __init__(
        self,
        *,
        n_organs: int,
        base_channels: int = 64,
        depth: int = 4,
        embed_dim: int = 64,
        n_prototypes: int = 5,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_organs = n_organs
        self.base_channels = base_channels
        self.depth = depth
        self.embed_dim = embed_dim
        self.n_prototypes = n_prototypes
        self.temperature = temperature
        self.config: dict[str, Any] = {}
        """The ``config.json`` of the folder the model was loaded from (empty otherwise)."""
        self.unet = UNet2D(out_channels=n_organs, base_channels=base_channels, depth=depth)
        self.projection = ProjectionHead(self.unet.feature_channels, embed_dim)
        kw = {"n_classes": n_organs + 1, "dim": embed_dim, "n_prototypes": n_prototypes}
        self.proto_labeled = PrototypeClassifier(**kw)
        self.proto_unlabeled = PrototypeClassifier(**kw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(organ logits, decoder features)`` of the U-Net."""
        return self.unet(x)

    def class_scores(self, x: torch.Tensor, classifier: str = "linear") -> torch.Tensor:
        """Per-class scores ``(B, organs + 1, H, W)`` whose argmax is the class map.

        For ``linear``, channel 0 is the constant 0.5 threshold and channels 1.. the sigmoid
        probabilities, so the argmax is the threshold classifier (Eq. 2) and the scores can be
        resized before deciding. For the prototype classifiers: softmax of cosine logits.
        """
        return self.all_class_scores(x, (classifier,))[classifier]

    def all_class_scores(self, x: torch.Tensor,
                         classifiers: tuple[str, ...] = CLASSIFIERS) -> dict[str, torch.Tensor]:
        """:meth:`class_scores` of several classifiers from one U-Net pass."""
        unknown = [c for c in classifiers if c not in CLASSIFIERS]
        if unknown:
            raise ValueError(f"unknown classifier {unknown[0]!r}; use one of {CLASSIFIERS}")
        logits, features = self.unet(x)
        out = {}
        emb = None
        for classifier in classifiers:
            if classifier == "linear":
                probs = torch.sigmoid(logits)
                out[classifier] = torch.cat([torch.full_like(probs[:, :1], 0.5), probs], dim=1)
                continue
            if emb is None:
                emb = self.projection(features)
            clf = self.proto_labeled if classifier == "labeled" else self.proto_unlabeled
            proto_logits, _ = clf(emb)
            out[classifier] = torch.softmax(proto_logits / self.temperature, dim=1)
        return out

    # ----------------------------------------------------------------- persistence
    def architecture(self) -> dict[str, Any]:
        """The network settings ``config.json`` records (besides the organs)."""
        return {"base_channels": self.base_channels, "depth": self.depth,
                "embed_dim": self.embed_dim, "n_prototypes": self.n_prototypes,
                "temperature": self.temperature}

    @classmethod
    def from_config(cls, config: Mapping[str, Any],
                    folder: str | Path | None = None) -> LTUDAModel:
        """An untrained model of the architecture a ``config.json`` describes.

        Args:
            config: The settings.
            folder: The folder they come from (named in errors).

        Raises:
            ModelError: A setting is missing or not a number.
        """
        try:
            return cls(
                n_organs=len(config["organs"]),
                base_channels=int(config["base_channels"]),
                depth=int(config["depth"]),
                embed_dim=int(config.get("embed_dim", 64)),
                n_prototypes=int(config.get("n_prototypes", 5)),
                temperature=float(config.get("temperature", 0.1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"config.json lacks or garbles a setting ({exc})", folder) from None

    def save(self, folder: str | Path, *, organs: Sequence[str], size: int,
             classifier: str = DEFAULT_CLASSIFIER, components: Mapping[str, int] | None = None,
             info: Mapping[str, Any] | None = None,
             state: Mapping[str, torch.Tensor] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``folder`` atomically.

        Args:
            folder: The model folder (created if needed).
            organs: Organ names, one per output channel.
            size: In-plane size of the slices the network sees.
            classifier: The classifier to predict with.
            components: Connected components to keep per organ (default 1 each).
            info: Records of the training, kept in ``config.json`` as they are.
            state: The weights to write (default: this model's); the best epoch may be the
                mean teacher's (:meth:`sparseseg.ltuda.trainer.Trainer.model_state`).

        Returns:
            The folder.

        Raises:
            ValueError: ``organs`` does not match the model's organ channels, or an unknown
                classifier.
            InputError: The folder cannot be written.
        """
        if len(organs) != self.n_organs:
            raise ValueError(f"{len(organs)} organ names for {self.n_organs} organ channels")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; use one of {CLASSIFIERS}")
        components = dict(components or {})
        config = {"organs": list(organs), "size": int(size), **self.architecture(),
                  "classifier": classifier,
                  "components": {o: int(components.get(o, 1)) for o in organs},
                  "normalization": NORMALIZATION, "slice_axis": SLICE_AXIS,
                  **dict(info or {})}
        weights = dict(self.state_dict() if state is None else state)
        return save_model(folder, kind=KIND, config=config, state=weights)

    @classmethod
    def load(cls, folder: str | Path, *, device: torch.device | str = "cpu") -> LTUDAModel:
        """Load a model folder (safetensors + JSON; nothing is unpickled or executed).

        The model is on ``device`` in eval mode, its ``config.json`` in :attr:`config`.

        Raises:
            ModelError: The folder is missing, corrupt, of another kind, or its weights do
                not match the network its config describes.
        """
        config, state = load_model(folder, kind=KIND)
        model = cls.from_config(config, folder)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"weights do not match config.json ({str(exc).splitlines()[0]})",
                             folder) from None
        model.config = config
        return model.to(device).eval()
