"""Model folders: ``config.json`` (how to rebuild) plus ``model.safetensors`` (weights).

Loading never unpickles: weights go through safetensors, configuration through JSON, and
nothing in the folder is executed.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparseseg import __version__
from sparseseg.errors import InputError, ModelError
from sparseseg.io.writer import atomic_path

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
"""Bumped when a model folder written by this version cannot be read by an older one."""


def _installed_version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """Versions of Python and the main libraries, plus the command line, for provenance.

    ``command`` is the command line quoted for a POSIX shell (``shlex.join``), so it can be
    pasted to run again; ``argv`` is the same as a list. The random seed is part of each model's
    training settings (``config.json["training"]["seed"]``).
    """
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": _installed_version("monai"),  # without importing it (seconds)
        "numpy": _installed_version("numpy"),
        "safetensors": _installed_version("safetensors"),
        "sparseseg": __version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "command": shlex.join(sys.argv),
        "argv": list(sys.argv),
    }


def save_model(
    folder: str | Path, *, kind: str, config: dict[str, Any], state: dict[str, torch.Tensor]
) -> Path:
    """Write a model folder atomically (each file via a temporary file and rename).

    Args:
        folder: Output folder, created if needed.
        kind: Model family, e.g. ``"oneseg"`` or ``"ltuda"``; checked on load.
        config: JSON-serialisable settings needed to rebuild and preprocess.
        state: Tensors to store (a ``state_dict``).

    Returns:
        The folder.

    Raises:
        InputError: The folder cannot be created or written (read-only, disk full); files
            already there are left as they were.
    """
    from safetensors.torch import save

    folder = Path(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    # Serialised in memory and written by Python, so the file gets the usual permissions
    # (safetensors' save_file creates it readable by its owner only).
    data = save(tensors)
    meta = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "environment": environment_info(),
        **config,
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            tmp.write_bytes(data)
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write the model ({exc.strerror or exc})", folder) from None
    return folder


def load_model(folder: str | Path, *, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a model folder written by :func:`save_model` without executing anything from it.

    Args:
        folder: The model folder.
        kind: Expected model family.

    Returns:
        ``(config, state_dict)``.

    Raises:
        ModelError: Missing folder or files, corrupt JSON or weights, another model family, or
            a newer format version.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError("model folder does not exist", folder)
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for file in (config_file, weights_file):
        if not file.exists():
            raise ModelError(f"model folder has no {file.name}", folder)
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError("is not valid JSON (corrupt model config)", config_file) from None
    if not isinstance(config, dict) or config.get("kind") != kind:
        found = config.get("kind") if isinstance(config, dict) else None
        raise ModelError(f"is a {found!r} model, expected {kind!r}", folder)
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"model format version {version!r} is not supported by sparseseg {__version__} "
            f"(supports <= {FORMAT_VERSION})",
            folder,
        )
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"corrupt weights ({exc})", weights_file) from None
    return config, state
