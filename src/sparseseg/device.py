"""Choosing the compute device: CPU first, CUDA when present."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparseseg.errors import SparsesegError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a :class:`torch.device`.

    Args:
        name: ``auto`` picks CUDA when available, else CPU.

    Raises:
        SparsesegError: CUDA was asked for but is not available, or the name is unknown.
    """
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SparsesegError(f"--device {name} asked for, but no CUDA device is available")
        try:
            return torch.device(name)
        except RuntimeError:
            raise SparsesegError(f"unknown device {name!r}") from None
    raise SparsesegError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")
