"""Training precision: float32, or bfloat16 mixed precision where the hardware has it.

Mixed precision runs the convolutions and matrix products in bfloat16 (``torch.autocast``)
while the weights, the optimiser and the losses stay in float32. On a GPU with bfloat16 and on
CPUs with AMX matrix units (Intel Xeon 4th generation and later) it trains several times
faster; on other CPUs bfloat16 is emulated and slower than float32, so ``auto`` keeps float32
there.

Example:
    >>> dtype = resolve_precision("auto", torch.device("cpu"))  # doctest: +SKIP
    >>> with autocast(torch.device("cpu"), dtype):  # doctest: +SKIP
    ...     loss = model(x)
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from sparseseg.errors import SparsesegError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
"""Accepted precision names."""


def _private_check(owner: object, name: str) -> bool:
    """Call PyTorch's private capability check ``owner.name()``; ``False`` if absent or failing."""
    check = getattr(owner, name, None)
    try:
        return bool(check()) if check is not None else False
    except Exception:  # a private check that changed or failed: assume the feature is missing
        return False


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (fast bfloat16 matrix products in oneDNN)."""
    import torch

    return _private_check(torch.cpu, "_is_amx_tile_supported")


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision name on a device (``None``: plain float32).

    Args:
        name: ``fp32``; ``bf16`` (refused where unsupported); ``auto``: bf16 on a CUDA device
            that supports it and on a CPU with AMX, float32 elsewhere.
        device: Where the model runs.

    Raises:
        SparsesegError: Unknown name, or ``bf16`` on a device without bfloat16.
    """
    import torch

    name = (name or "auto").lower()
    if name not in PRECISIONS:
        raise SparsesegError(f"unknown precision {name!r} (use {', '.join(PRECISIONS)})")
    if name == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        supported = cpu_has_amx() if name == "auto" else _cpu_bf16()
    else:
        supported = False
    if name == "bf16" and not supported:
        raise SparsesegError(f"--precision bf16 asked for, but {device} has no bfloat16 support")
    return torch.bfloat16 if supported else None


def _cpu_bf16() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU at all (natively or emulated)."""
    import torch

    return _private_check(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``; a no-op context for ``None``."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32`` or ``bf16`` for a value of :func:`resolve_precision`."""
    return "fp32" if dtype is None else "bf16"
