"""Per-case lock files, so that workers sharing an output folder split the cases.

A worker claims a case by creating ``OUTPUT/CASE.nii.gz.lock`` exclusively (:class:`CaseLock`)
and keeps it fresh with a background heartbeat while it computes the case; locks of dead
workers (a process of this host that no longer runs, or a lock not refreshed for
:data:`STALE_AFTER` seconds) are taken over.

Example:
    >>> lock = CaseLock("labels/case_01.nii.gz")  # doctest: +SKIP
    >>> if lock.acquire():  # doctest: +SKIP
    ...     try:
    ...         compute_and_write()
    ...     finally:
    ...         lock.release()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sparseseg.errors import InputError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
"""Suffix of the per-case lock files, appended to the output file's name."""

STALE_AFTER = 600.0
"""Seconds after which a lock file not refreshed by its owner is taken over."""

_HELD: set[str] = set()
"""Tokens of the locks this process holds (a lock of our own pid not in it is stale)."""
_HELD_GUARD = threading.Lock()


def _open_exclusive(path: Path) -> int:
    """Create ``path``, failing with ``FileExistsError`` when it exists (``O_EXCL``)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (zombies count as dead)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass(frozen=True)
class _LockInfo:
    text: str
    age: float
    inode: tuple[int, int]


def _read_lock(path: Path) -> _LockInfo | None:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            text = fh.read(4096).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    return _LockInfo(text, time.time() - st.st_mtime, (st.st_dev, st.st_ino))


class CaseLock:
    """A claim on one case's output file, held by one worker while it computes the case.

    The lock is a file ``TARGET.lock`` created with ``O_CREAT | O_EXCL`` (atomic on local
    file systems and NFS v3 or later), holding JSON ``{"pid", "host", "token", "started"}``.
    While held, its modification time is refreshed (:meth:`refresh`; :func:`run_batch` does
    it every minute, or every ``stale_after / 10`` seconds when that is shorter).
    An existing lock is *stale*, and taken over, when

    * it was written on this host by a process that no longer runs (``kill -9``, a crash, a
      node reboot of a job rescheduled on the same host): taken over at once;
    * or its modification time is older than ``stale_after`` seconds (default 10 minutes):
      a worker on another host that died, or a lock left half-written.

    Taking over renames the stale file aside and checks that it was indeed the stale one
    before creating a new lock, so two workers racing for the same stale lock do not both win.
    Locking only avoids duplicated work: outputs are written by rename, so even a case
    computed twice is never half-written, and both writers produce the same file.

    Args:
        target: The output file the lock protects.
        stale_after: Seconds without refresh after which a lock is stale.
    """

    def __init__(self, target: str | Path, *, stale_after: float = STALE_AFTER) -> None:
        target = Path(target)
        self.path = target.with_name(target.name + LOCK_SUFFIX)
        self.stale_after = float(stale_after)
        self.token = uuid.uuid4().hex
        self._fd: int | None = None
        self._guard = threading.Lock()  # refresh() runs in the heartbeat thread

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Try to take the lock without waiting; take over a stale one.

        Returns:
            ``True`` when this worker now holds the lock, ``False`` when another live
            worker does.

        Raises:
            InputError: The lock file cannot be created (read-only folder, disk full...).
        """
        if self.held:
            return True
        for _ in range(3):
            with _HELD_GUARD:
                _HELD.add(self.token)
            try:
                fd = _open_exclusive(self.path)
            except FileExistsError:
                self._forget()
                info = _read_lock(self.path)
                if info is None:
                    continue  # released meanwhile: try again
                if not self._is_stale(info) or not self._take_over(info):
                    return False
                continue
            except OSError as exc:
                self._forget()
                raise InputError(
                    f"cannot write in the output folder ({exc.strerror or exc})", self.path.parent
                ) from None
            try:
                record = {"pid": os.getpid(), "host": socket.gethostname(),
                          "token": self.token, "started": time.time()}
                os.write(fd, json.dumps(record).encode())
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                self._forget()
                raise InputError(
                    f"cannot write in the output folder ({exc.strerror or exc})", self.path.parent
                ) from None
            self._fd = fd
            return True
        return False

    def refresh(self) -> None:
        """Touch the lock file so other workers see its owner alive."""
        with self._guard, contextlib.suppress(OSError, ValueError, NotImplementedError):
            if self._fd is not None:
                os.utime(self._fd if os.utime in os.supports_fd else self.path)

    def release(self) -> None:
        """Remove the lock file if it is still ours; no-op when not held."""
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            mine = os.fstat(fd)
            current = os.stat(self.path)
            if (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)
            self._forget()

    def _forget(self) -> None:
        with _HELD_GUARD:
            _HELD.discard(self.token)

    def _is_stale(self, info: _LockInfo) -> bool:
        if info.age > self.stale_after:
            return True
        try:
            record = json.loads(info.text)
            pid, host, token = int(record["pid"]), str(record["host"]), str(record["token"])
        except (ValueError, KeyError, TypeError):
            return False  # being written right now, or garbled: wait for stale_after
        if host != socket.gethostname():
            return False
        if pid == os.getpid():
            with _HELD_GUARD:
                return token not in _HELD
        return not _pid_alive(pid)

    def _take_over(self, info: _LockInfo) -> bool:
        """Move the stale lock aside; ``True`` when it was the one judged stale."""
        aside = self.path.with_name(f".{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone removed it: just try to create ours
        except OSError as exc:
            raise InputError(
                f"cannot write in the output folder ({exc.strerror or exc})", self.path.parent
            ) from None
        try:
            st = os.stat(aside)
            same = (st.st_dev, st.st_ino) == info.inode
            if same:
                log.info("%s: taking over a stale lock (%s)", self.path.name,
                         info.text.strip() or "empty")
            else:
                # We moved a lock another worker has just created: put it back.
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
            return same
        finally:
            with contextlib.suppress(OSError):
                aside.unlink()


class Heartbeat:
    """Background thread refreshing the lock currently held, every ``interval`` seconds.

    Used as a context manager around a batch; set :attr:`lock` to the lock being held (and
    back to ``None`` after releasing it).

    Args:
        interval: Seconds between refreshes.

    Attributes:
        lock: The lock to refresh, or ``None``.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock: CaseLock | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sparseseg-lock", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            lock = self.lock
            if lock is not None:
                lock.refresh()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
