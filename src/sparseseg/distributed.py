"""Data-parallel training across the processes that ``torchrun`` starts.

``torchrun --nproc_per_node=N -m sparseseg oneseg train ...`` starts ``N`` copies of the
command and tells each one who it is through the environment variables ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT`` to meet). :func:`session`
reads them and joins the process group (``gloo`` on CPU, ``nccl`` on CUDA, where each process
takes the GPU ``cuda:LOCAL_RANK``); the group lasts until the process exits, so a script may
train several models in a row. Without those variables, or with ``WORLD_SIZE=1``, nothing
happens and training runs as a single process.

The helpers below work on the default process group and do nothing (or return their input)
when there is none, so trainers call them unconditionally. Nothing here pickles: objects are
exchanged as JSON text in byte tensors.

Example:
    >>> with session(torch.device("cpu")) as (info, device):  # doctest: +SKIP
    ...     if info.is_main:
    ...         print("writing files")
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import gc
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseseg.errors import SparsesegError

log = logging.getLogger(__name__)

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
"""The variables torchrun sets for every process it starts."""

TIMEOUT_MINUTES = 30
"""How long a process waits for the others at a collective call (e.g. while rank 0 validates)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel run.

    Args:
        rank: Global rank (0 writes files and shows progress).
        world_size: Number of processes.
        local_rank: Rank on this machine (picks the GPU).
        backend: ``gloo`` or ``nccl`` when a process group is active, else ``None``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and reports progress (rank 0)."""
        return self.rank == 0


def env_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read torchrun's variables (a single process when they are absent).

    Raises:
        SparsesegError: A variable is not an integer, or the ranks are out of range.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return DistInfo()
    values = {}
    for name in ENV_VARS:
        text = environ.get(name, "0")
        try:
            values[name] = int(text)
        except ValueError:
            raise SparsesegError(
                f"environment variable {name}={text!r} is not an integer (set by torchrun)"
            ) from None
    world, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise SparsesegError(
            f"inconsistent torchrun environment: WORLD_SIZE={world} RANK={rank} LOCAL_RANK={local}"
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def current() -> DistInfo:
    """The process group this process is in now (a single process when there is none)."""
    if not _active():
        return DistInfo()
    dist = torch.distributed
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                    backend=str(dist.get_backend()))


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[tuple[DistInfo, torch.device]]:
    """Join torchrun's process group for a training run.

    Inside a torchrun launch with ``WORLD_SIZE > 1``: a CUDA ``device`` becomes
    ``cuda:LOCAL_RANK``, the group is created (``nccl`` for CUDA, ``gloo`` for CPU) unless one
    exists already, and the ``sparseseg`` logger of ranks other than 0 only shows warnings
    inside the block. A group created here is kept for later runs and destroyed when the
    process exits (creating it again after destroying it hangs under torchrun).

    Args:
        device: The device asked for (``--device``).

    Yields:
        ``(info, device)``: this process's place in the run and the device it must use.

    Raises:
        SparsesegError: Bad torchrun variables, or fewer GPUs than processes on a machine.
    """
    info = current() if _active() else env_info()
    if not info.enabled:
        yield info, device
        return
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise SparsesegError(
                f"process with LOCAL_RANK={info.local_rank} has no GPU of its own ({count} "
                "visible); start at most one process per GPU (torchrun --nproc_per_node)"
            )
        if device.index is not None and device.index != info.local_rank:
            log.warning("--device %s ignored under torchrun: using cuda:%d (LOCAL_RANK)",
                        device, info.local_rank)
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not _active():
        if not torch.distributed.is_available():
            raise SparsesegError("this PyTorch build has no torch.distributed support")
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(
            backend, timeout=datetime.timedelta(minutes=TIMEOUT_MINUTES),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
        atexit.register(_destroy)
    info = current()
    package_log = logging.getLogger("sparseseg")
    level = package_log.level
    if not info.is_main:
        package_log.setLevel(logging.WARNING)
    try:
        yield info, device
    finally:
        package_log.setLevel(level)


def _destroy() -> None:
    """At exit: free unreachable objects first (a data-parallel wrapper caught in a reference
    cycle holds the group, and freed later, during the interpreter's own teardown, its gloo
    threads can abort the process), then destroy the group while Python is still whole."""
    if _active():
        gc.collect()
        torch.distributed.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors handed to collectives must live (CUDA for nccl)."""
    if str(torch.distributed.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(value: float) -> float:
    """Rank 0's ``value`` on every process (e.g. the clock that decides when to stop)."""
    if not _active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    torch.distributed.broadcast(t, src=0)
    return float(t.item())


def broadcast_bytes(data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every process (other ranks may pass ``None``)."""
    if not _active():
        return data or b""
    dev = _comm_device()
    size = torch.tensor([len(data or b"")], dtype=torch.int64, device=dev)
    torch.distributed.broadcast(size, src=0)
    n = int(size.item())
    if torch.distributed.get_rank() == 0:
        buf = torch.frombuffer(bytearray(data or b""), dtype=torch.uint8) if n else None
        buf = buf.to(dev) if buf is not None else torch.empty(0, dtype=torch.uint8, device=dev)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=dev)
    if n:
        torch.distributed.broadcast(buf, src=0)
    return bytes(buf.cpu().numpy().tobytes())


def all_gather_bytes(data: bytes) -> list[bytes]:
    """Every process's ``data``, in rank order, on every process."""
    if not _active():
        return [data]
    dev = _comm_device()
    world = torch.distributed.get_world_size()
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    torch.distributed.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    buf = torch.zeros(longest, dtype=torch.uint8, device=dev)
    if data:
        buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    parts = [torch.zeros_like(buf) for _ in range(world)]
    torch.distributed.all_gather(parts, buf)
    return [bytes(p[:n].cpu().numpy().tobytes()) for p, n in zip(parts, lengths, strict=True)]


def broadcast_json(obj: Any) -> Any:
    """Rank 0's JSON-serialisable ``obj`` on every process."""
    if not _active():
        return obj
    data = json.dumps(obj).encode() if torch.distributed.get_rank() == 0 else None
    return json.loads(broadcast_bytes(data).decode())


def all_gather_json(obj: Any) -> list[Any]:
    """Every process's JSON-serialisable ``obj``, in rank order."""
    if not _active():
        return [obj]
    return [json.loads(b.decode()) for b in all_gather_bytes(json.dumps(obj).encode())]


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm statistics, prototypes) to every process.

    Parameters stay in step through the all-reduced gradients; buffers that each process
    updates from its own batch would drift apart without this. One broadcast per dtype.
    """
    if not _active():
        return
    dev = _comm_device()
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for buf in module.buffers():
        groups.setdefault(buf.dtype, []).append(buf)
    for bufs in groups.values():
        flat = torch.cat([b.detach().reshape(-1).to(dev) for b in bufs])
        torch.distributed.broadcast(flat, src=0)
        offset = 0
        for b in bufs:
            n = b.numel()
            b.copy_(flat[offset : offset + n].view_as(b))
            offset += n


def data_parallel(module: nn.Module, device: torch.device, *,
                  find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``module`` in :class:`~torch.nn.parallel.DistributedDataParallel`.

    Gradients of every parameter used inside the wrapper's ``forward`` are averaged over the
    processes during ``backward``. Buffers are copied from rank 0 when wrapping but not at each
    forward: trainers call :func:`sync_buffers` after each step instead,
    so all processes hold the same state whenever they validate, screen or save.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch >= 2.13 renamed broadcast_buffers (and warns about the old name).
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in options
               else {"broadcast_buffers": False})
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **no_sync,
    )
