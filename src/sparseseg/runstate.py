"""Resumable training checkpoints: one safetensors file holding tensors and a JSON header.

While training, ``sparseseg oneseg train`` and ``sparseseg ltuda train`` write
``MODEL_DIR/resume.safetensors`` every few minutes and at the end. The file's tensors are the
weights, the optimiser's state and (LTUDA) the mean teacher; its safetensors metadata holds one
JSON document with everything else: progress (epoch, step, position in the epoch), the
optimiser's and scheduler's settings, the random generators of every process, trainer-specific
bookkeeping, and a *fingerprint* of the settings and data the run was started with.

Writing is atomic: the whole file goes to a temporary file beside it, is flushed to disk, and is
renamed over the old one, so a kill at any moment leaves the old or the new checkpoint, never a
broken one. Reading never unpickles: the header is JSON, the tensors safetensors; a file that is
anything else (a pickle, a ``torch.save`` archive, a truncated file, another format version) is
refused with a :class:`~sparseseg.errors.ModelError`, as is a checkpoint whose fingerprint
differs from the run that wants to continue it.

Random generators are stored as JSON (NumPy's bit-generator state; PyTorch's byte states in
base64).

Format versions: 2 counts epochs from 1 in both trainers (:mod:`sparseseg.training_loop`) and
keeps LTUDA's epoch results and best epoch as the trainer's own ``history`` and ``best``.
Version 1 checkpoints (OneSeg counted its epochs from 0; LTUDA kept the caller's log rows in
``record``) are still continued: each trainer upgrades their progress in
:meth:`ResumableTrainer.upgrade_meta`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparseseg import __version__
from sparseseg.errors import InputError, ModelError, first_line

log = logging.getLogger(__name__)

RESUME_NAME = "resume.safetensors"
"""File name of the resumable checkpoint inside a model folder."""

FORMAT = "sparseseg-run-state"
FORMAT_VERSION = 2
"""Bumped whenever a checkpoint written by this version cannot be continued by an older one."""

OLDEST_VERSION = 1
"""The oldest format version this version continues (see :meth:`ResumableTrainer.upgrade_meta`)."""

META_KEY = "sparseseg_run_state"
"""Key of the JSON document in the safetensors metadata."""

PAUSE_ENV = "SPARSESEG_TEST_PAUSE_IN_CHECKPOINT_WRITE"
"""Test hook: seconds to sleep between writing the temporary file and renaming it (lets a test
kill the process in the middle of a checkpoint write). Unset in normal use."""

MAX_HEADER_BYTES = 100_000_000


@dataclass
class RunState:
    """What a trainer needs to continue a run.

    Args:
        meta: JSON-serialisable progress and settings (trainer-specific).
        tensors: Named tensors (weights, optimiser moments...).
        rng: This process's random generators (:func:`rng_state`); a checkpoint holds one
            entry per process of the run.
        version: The format version ``meta`` was written in.
    """

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION


# ------------------------------------------------------------------------------ pieces
def prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{prefix + "." + name: tensor}`` (a ``state_dict`` under a namespace)."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors stored under ``prefix`` by :func:`prefixed`, without it."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}


def optimizer_state(optimizer: torch.optim.Optimizer,
                    prefix: str = "optimizer") -> tuple[dict, dict[str, torch.Tensor]]:
    """Split ``optimizer.state_dict()`` into JSON and tensors.

    Returns:
        ``(json_part, tensors)``: the parameter groups and non-tensor state values, and the
        state tensors named ``{prefix}.{param index}.{key}``.
    """
    sd = optimizer.state_dict()
    tensors, values = {}, {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                values.setdefault(str(index), {})[key] = value
    groups = []
    for group in sd["param_groups"]:
        g = dict(group)
        if isinstance(g.get("betas"), tuple):
            g["betas"] = list(g["betas"])
        groups.append(g)
    return {"param_groups": groups, "values": values}, tensors


def load_optimizer_state(optimizer: torch.optim.Optimizer, part: Mapping[str, Any],
                         tensors: Mapping[str, torch.Tensor], prefix: str = "optimizer") -> None:
    """Inverse of :func:`optimizer_state` (the optimiser must have the same parameter groups)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in unprefixed(prefix, tensors).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in part.get("values", {}).items():
        state.setdefault(int(index), {}).update(entry)
    # A fixed order whatever the file's (safetensors returns its tensors unordered).
    state = {i: dict(sorted(state[i].items())) for i in sorted(state)}
    groups = []
    for group in part["param_groups"]:
        g = dict(group)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def rng_state(rng: np.random.Generator | None, generator: torch.Generator | None,
              device: torch.device | None = None) -> dict[str, Any]:
    """JSON state of a NumPy generator, a PyTorch generator and PyTorch's global generators.

    Args:
        rng: A NumPy generator (or ``None``).
        generator: A CPU :class:`torch.Generator` (or ``None``).
        device: When a CUDA device, its global generator is included too.
    """
    state: dict[str, Any] = {"torch": _b64(torch.get_rng_state())}
    if rng is not None:
        state["numpy"] = rng.bit_generator.state
    if generator is not None:
        state["generator"] = _b64(generator.get_state())
    if device is not None and device.type == "cuda":
        state["cuda"] = _b64(torch.cuda.get_rng_state(device))
    return state


def set_rng_state(state: Mapping[str, Any], rng: np.random.Generator | None,
                  generator: torch.Generator | None, device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` captured (in place: the same generator objects)."""
    torch.set_rng_state(_unb64(state["torch"]))
    if rng is not None:
        rng.bit_generator.state = state["numpy"]
    if generator is not None:
        generator.set_state(_unb64(state["generator"]))
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(_unb64(state["cuda"]), device)


def digest(arrays: Iterable[np.ndarray | torch.Tensor | str]) -> str:
    """SHA-256 of a sequence of arrays (shape, dtype and bytes) and strings."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, str):
            h.update(b"s" + a.encode())
            continue
        arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(f"a{arr.shape}{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def architecture_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state names, shapes and dtypes (not values)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------ the file
def encode(state: RunState, *, kind: str, fingerprint: Mapping[str, Any],
           rng: list[dict[str, Any]]) -> bytes:
    """The checkpoint file's bytes (safetensors with the JSON document in its metadata)."""
    from safetensors.torch import save

    from sparseseg.checkpoint import environment_info

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "sparseseg": __version__,
        "environment": environment_info(),
        "fingerprint": dict(fingerprint),
        "rng": rng,
        "meta": state.meta,
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.tensors.items()}
    return save(tensors, metadata={META_KEY: json.dumps(doc)})


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise ValueError("file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise ValueError("no safetensors header")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("no safetensors header")
    return header


def decode(data: bytes, *, path: str | Path, kind: str) -> tuple[dict[str, Any], RunState]:
    """Parse a checkpoint's bytes without executing anything.

    Returns:
        ``(document, state)``: the JSON document (with ``fingerprint`` and ``rng`` of every
        process) and the state (``rng`` left empty).

    Raises:
        ModelError: Not a sparseseg training checkpoint, truncated or corrupt, of another kind,
            or written by an incompatible format version.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        header = _header(data)
        doc = json.loads(header.get("__metadata__", {}).get(META_KEY, "null"))
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError):
        raise ModelError("is not a sparseseg training checkpoint (expected safetensors written "
                         "by sparseseg; refusing to read it)", path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError("is not a sparseseg training checkpoint", path)
    version = doc.get("format_version")
    if (not isinstance(version, int) or isinstance(version, bool)
            or not OLDEST_VERSION <= version <= FORMAT_VERSION):
        raise ModelError(
            f"training checkpoint format version {version!r} (sparseseg {doc.get('sparseseg')}) "
            f"cannot be continued by sparseseg {__version__} (format {FORMAT_VERSION}); start "
            "without --resume", path)
    if doc.get("kind") != kind:
        raise ModelError(f"is a {doc.get('kind')!r} training checkpoint, expected {kind!r}", path)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelError(f"corrupt training checkpoint ({str(exc)[:200]})", path) from None
    if not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("rng"), list):
        raise ModelError("corrupt training checkpoint (incomplete header)", path)
    return doc, RunState(meta=doc["meta"], tensors=tensors, version=version)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any],
                      path: str | Path) -> None:
    """Refuse to continue a run started with other settings or data.

    Raises:
        ModelError: Naming the settings that differ (``saved -> current``).
    """
    a, b = _flatten(saved), _flatten(current)
    # JSON turns tuples into lists: compare the JSON forms.
    a = {k: json.loads(json.dumps(v)) for k, v in a.items()}
    b = {k: json.loads(json.dumps(v)) for k, v in b.items()}
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<none>") != b.get(key, "<none>"):
            old, new = a.get(key, "<none>"), b.get(key, "<none>")
            if isinstance(old, str) and len(old) == 64 and isinstance(new, str):
                diffs.append(f"{key} differs")
            else:
                diffs.append(f"{key} {old!r} -> {new!r}")
    if diffs:
        shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
        raise ModelError(
            f"checkpoint was made with other settings or data ({shown}); resume with the "
            "original settings, or train without --resume", path)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file and an atomic rename."""
    from sparseseg.io.writer import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            time.sleep(float(pause))
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files that a killed write of ``path`` left behind."""
    from sparseseg.io.formats import split_extension

    path = Path(path)
    stem, ext = split_extension(path)
    return sorted(path.parent.glob(f".{stem}.tmp-*{ext}"))


def read_run_state(path: str | Path, *, kind: str,
                   fingerprint: Mapping[str, Any] | None = None) -> tuple[dict, RunState]:
    """Read and check a checkpoint file in a single process (see :func:`decode`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read training checkpoint ({exc.strerror})", path) from None
    doc, state = decode(data, path=path, kind=kind)
    if fingerprint is not None:
        check_fingerprint(doc["fingerprint"], fingerprint, path)
    return doc, state


# ------------------------------------------------------------------------------ trainers
class ResumableTrainer:
    """The checkpoint plumbing both trainers share: :meth:`state`, :meth:`restore`, saving.

    A subclass holds ``optimizer``, ``rng`` (NumPy), ``generator`` (PyTorch), ``device`` and
    the progress counters ``epoch`` (the epoch under way, from 1), ``epoch_step``, ``step``,
    ``elapsed`` and ``finished`` (advanced by :mod:`sparseseg.training_loop`); it adds what
    else it must keep with :meth:`_run_meta` and :meth:`_run_tensors` and puts it back in
    :meth:`_restore_run` (weights, and the optimiser's parameter groups when they change
    during a run), which runs before the optimiser's state is loaded.
    """

    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    generator: torch.Generator
    device: torch.device
    epoch: int
    epoch_step: int
    step: int
    elapsed: float
    finished: bool

    def _run_meta(self) -> dict[str, Any]:
        raise NotImplementedError

    def _run_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _restore_run(self, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def upgrade_meta(self, meta: dict[str, Any], version: int) -> dict[str, Any]:
        """``meta`` of a checkpoint written in format ``version``, as this version writes it
        (called by :meth:`restore` before anything is read; the default changes nothing)."""
        return meta

    def _save(self, checkpoint: RunCheckpoint, elapsed: float) -> None:
        self.elapsed = elapsed
        checkpoint.save(self.state, rng_state(self.rng, self.generator, self.device), elapsed)

    def state(self) -> RunState:
        """Everything needed to continue this run (see :mod:`sparseseg.runstate`)."""
        optim_json, optim_tensors = optimizer_state(self.optimizer)
        meta = {"epoch": self.epoch, "epoch_step": self.epoch_step, "step": self.step,
                "elapsed": self.elapsed, "finished": self.finished, "optimizer": optim_json,
                **self._run_meta()}
        return RunState(meta=meta, tensors={**self._run_tensors(), **optim_tensors},
                        rng=rng_state(self.rng, self.generator, self.device))

    def restore(self, state: RunState, source: str | Path | None = None) -> None:
        """Continue from a saved :meth:`state` (same settings, data and number of processes).

        Raises:
            ModelError: The state does not fit this trainer.
        """
        try:
            meta = self.upgrade_meta(dict(state.meta), state.version)
            self._restore_run(meta, state.tensors)
            load_optimizer_state(self.optimizer, meta["optimizer"], state.tensors)
            set_rng_state(state.rng, self.rng, self.generator, self.device)
            self.epoch = int(meta["epoch"])
            self.epoch_step = int(meta["epoch_step"])
            self.step = int(meta["step"])
            self.elapsed = float(meta["elapsed"])
            self.finished = bool(meta["finished"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ModelError(f"training checkpoint does not fit this run ({first_line(exc)})",
                             source) from None


# ------------------------------------------------------------------------------ policy
class RunClock:
    """Training time in seconds, counting the sessions before a resume.

    Args:
        offset: Seconds trained before this session (from the checkpoint).
    """

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = float(offset)
        self.start = time.monotonic()

    def local(self) -> float:
        """This process's reading (for display)."""
        return self.offset + time.monotonic() - self.start

    def agreed(self) -> float:
        """Rank 0's reading on every process (for decisions: stop, save, schedule)."""
        from sparseseg import distributed

        return distributed.agree(self.local())


class RunCheckpoint:
    """Where and how often a run saves its state, and how it resumes.

    Every process calls :meth:`save` and :meth:`load` at the same points (they exchange the
    processes' random generators); only rank 0 reads and writes the file.

    Args:
        path: The checkpoint file (``MODEL_DIR/resume.safetensors``).
        kind: ``oneseg`` or ``ltuda``; a checkpoint of another kind is refused.
        fingerprint: JSON settings and data digests; a checkpoint with another one is refused.
        every_minutes: Save when this much training time passed since the last save
            (``None``: only at the end).
        rank: This process's rank.
    """

    def __init__(self, path: str | Path, *, kind: str, fingerprint: Mapping[str, Any],
                 every_minutes: float | None = 5.0, rank: int = 0) -> None:
        self.path = Path(path)
        self.kind = kind
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.every = None if every_minutes is None else 60.0 * float(every_minutes)
        self.rank = rank
        self.last_saved: float | None = None
        self.saves = 0

    def start(self, elapsed: float) -> None:
        """Start the interval clock (training time ``elapsed`` seconds so far)."""
        self.last_saved = elapsed

    def due(self, elapsed: float) -> bool:
        """Whether a periodic save is due at training time ``elapsed`` (same on all ranks)."""
        if self.every is None:
            return False
        if self.last_saved is None:
            self.last_saved = elapsed
        return elapsed - self.last_saved >= self.every

    def save(self, build: Callable[[], RunState], rng: dict[str, Any], elapsed: float) -> None:
        """Save now (every process must call it; rank 0 builds and writes the state).

        Args:
            build: Makes the state to save (called on rank 0 only).
            rng: This process's random generators (:func:`rng_state`).
            elapsed: Training seconds so far.

        Raises:
            InputError: The file cannot be written (disk full, read-only folder); the previous
                checkpoint is left as it was.
        """
        from sparseseg import distributed

        rngs = distributed.all_gather_json(rng)
        if self.rank == 0:
            data = encode(build(), kind=self.kind, fingerprint=self.fingerprint, rng=rngs)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, data)
            except OSError as exc:
                raise InputError(f"cannot write training checkpoint ({exc.strerror or exc})",
                                 self.path) from None
            log.debug("training checkpoint saved to %s", self.path)
        self.last_saved = elapsed
        self.saves += 1

    def load(self) -> RunState | None:
        """The saved state for this process, or ``None`` when there is no checkpoint.

        Rank 0 reads the file and sends its bytes to the others (no shared disk needed).

        Raises:
            ModelError: A corrupt or incompatible checkpoint (see :func:`decode`).
        """
        from sparseseg import distributed

        data = None
        if self.rank == 0 and self.path.is_file():
            try:
                data = b"\x01" + self.path.read_bytes()  # the marker tells "exists" from ""
            except OSError as exc:
                raise ModelError(f"cannot read training checkpoint ({exc.strerror})",
                                 self.path) from None
        data = distributed.broadcast_bytes(data)
        if not data:
            return None
        doc, state = decode(data[1:], path=self.path, kind=self.kind)
        check_fingerprint(doc["fingerprint"], self.fingerprint, self.path)
        rngs = doc["rng"]
        if len(rngs) <= self.rank or not isinstance(rngs[self.rank], dict):
            raise ModelError("corrupt training checkpoint (random states missing)", self.path)
        state.rng = rngs[self.rank]
        return state

    def remove_stale(self) -> None:
        """Delete temporary files left by a write that was killed (rank 0 only)."""
        if self.rank != 0:
            return
        for tmp in stale_temporaries(self.path):
            with contextlib.suppress(OSError):
                tmp.unlink()


def prepare_checkpoint(trainer: Any, output: Path, *, kind: str,
                       every_minutes: float | None, resume: bool,
                       rank: int = 0) -> tuple[RunCheckpoint | None, bool]:
    """The checkpoint a training run writes, after resuming ``trainer`` from it if asked.

    Both trainers share this: with ``resume`` the state in ``output/resume.safetensors`` (if
    any) is restored into ``trainer`` (which has ``fingerprint()`` and ``restore()``);
    temporary files of a killed write are removed.

    Args:
        trainer: ``OneSegTrainer`` or the LTUDA ``Trainer``.
        output: The model folder.
        kind: ``oneseg`` or ``ltuda``.
        every_minutes: Minutes between saves; ``0`` or ``None``: write no checkpoint.
        resume: Continue from an existing checkpoint.
        rank: This process's rank.

    Returns:
        The checkpoint to save to (``None`` when none is written) and whether the trainer
        was restored from one.
    """
    if not (every_minutes or resume):
        return None, False
    checkpoint = RunCheckpoint(output / RESUME_NAME, kind=kind,
                               fingerprint=trainer.fingerprint(),
                               every_minutes=every_minutes or None, rank=rank)
    resumed = False
    if resume:
        saved = checkpoint.load()
        if saved is None:
            log.warning("%s: no checkpoint to resume from; training from scratch",
                        checkpoint.path)
        else:
            trainer.restore(saved, checkpoint.path)
            resumed = True
    checkpoint.remove_stale()
    return (checkpoint if every_minutes else None), resumed
