"""Run one prediction over many cases: split them across workers, skip, lock, collect failures.

The batch commands (``sparseseg oneseg propagate`` and ``sparseseg ltuda predict`` with folder
inputs) share this module. It lists no files itself; the caller gives it cases
(:class:`sparseseg.io.Case`), an output folder, a ``work`` function computing one case's
result and a ``save`` function writing it. :func:`run_batch` then

* keeps the cases of part ``part_id`` of ``num_parts``: sorted by case name, every
  ``num_parts``-th from ``part_id`` on (nnU-Net's ``[part_id::num_parts]`` convention, 0-based),
  so every case is in exactly one part whatever the number of cases;
* writes ``OUTPUT/CASE.nii.gz`` (nnU-Net's naming) through ``save``, which must write atomically
  (temporary file, then rename: :func:`sparseseg.io.atomic_path`), so an output file is either
  complete or absent;
* with ``skip_existing`` (``--continue``), skips cases whose output file already exists
  (and removes the stale lock a worker killed just after writing it left);
* claims each case with a lock file ``OUTPUT/CASE.nii.gz.lock`` before computing it (see
  :class:`CaseLock`), so that workers sharing an output folder split the cases instead of
  each doing all of them;
* records a case whose input is bad (``work`` raises) and goes on with the others;
* stops at once when the output cannot be written (``save`` raises, or the lock file cannot be
  created): disk full, read-only folder. Outputs written before are untouched.

Example:
    >>> report = run_batch(cases, output="labels", work=segment, save=write,
    ...                    num_parts=4, part_id=1, skip_existing=True)  # doctest: +SKIP
    >>> report.summary()  # doctest: +SKIP
    '3 done, 2 skipped (already written), 0 failed'
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sparseseg.errors import InputError, SparsesegError
from sparseseg.io.dataset import Case, find_cases
from sparseseg.io.formats import case_name, is_volume_file, split_extension

log = logging.getLogger(__name__)

R = TypeVar("R")

OUTPUT_EXTENSION = ".nii.gz"
"""Extension of the files batch runs write (``CASE.nii.gz``)."""

LOCK_SUFFIX = ".lock"
"""Suffix of the per-case lock files, appended to the output file's name."""

STALE_AFTER = 600.0
"""Seconds after which a lock file not refreshed by its owner is taken over."""

_HELD: set[str] = set()
"""Tokens of the locks this process holds (a lock of our own pid not in it is stale)."""
_HELD_GUARD = threading.Lock()


class BatchError(SparsesegError):
    """Some cases of a batch failed; the others were done.

    Args:
        report: The run's report (``report.failed`` maps case name to the problem).
    """

    def __init__(self, report: BatchReport) -> None:
        self.report = report
        failed = sorted(report.failed)
        if len(failed) == 1:
            detail = f"{failed[0]}: {report.failed[failed[0]]}"
        else:
            detail = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        super().__init__(
            f"{len(failed)} of {report.total} cases failed ({detail}); the others are written"
        )


@dataclass
class BatchReport:
    """What a batch run did with each case of its part.

    Attributes:
        total: Cases in this part.
        done: Cases this run computed and wrote.
        skipped: Cases whose output already existed (``skip_existing``).
        elsewhere: Cases another worker wrote while this one waited for its lock.
        failed: Case name -> one-line reason, for cases not written.
        outputs: Case name -> output file, for every case whose output now exists.
    """

    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no case failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: ``N done, N skipped (already written)[, N by other workers], N failed``."""
        parts = [f"{len(self.done)} done", f"{len(self.skipped)} skipped (already written)"]
        if self.elsewhere:
            parts.append(f"{len(self.elsewhere)} done by other workers")
        parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts)


def validate_parts(num_parts: int, part_id: int) -> None:
    """Check a ``part_id`` of ``num_parts`` split.

    Raises:
        SparsesegError: ``num_parts < 1`` or ``part_id`` outside ``0 .. num_parts - 1``.
    """
    if int(num_parts) < 1:
        raise SparsesegError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= int(part_id) < int(num_parts):
        raise SparsesegError(
            f"--part-id must be in 0..{int(num_parts) - 1} for --num-parts {num_parts} "
            f"(0-based), got {part_id}"
        )


def split_parts(cases: Sequence[Case], num_parts: int = 1, part_id: int = 0) -> list[Case]:
    """The cases of part ``part_id`` (0-based) of ``num_parts``.

    Cases are sorted by name and every ``num_parts``-th is taken starting at ``part_id``, like
    nnU-Net's ``--num_parts/--part_id``. Every case falls in exactly one part; parts differ in
    size by at most one case.

    Raises:
        SparsesegError: Invalid split (see :func:`validate_parts`).
    """
    validate_parts(num_parts, part_id)
    return sorted(cases, key=lambda c: c.name)[int(part_id) :: int(num_parts)]


def output_path(output: str | Path, name: str) -> Path:
    """The output file of case ``name`` in folder ``output``: ``OUTPUT/NAME.nii.gz``."""
    return Path(output) / f"{name}{OUTPUT_EXTENSION}"


def is_batch_input(path: str | Path) -> bool:
    """Whether ``path`` holds several cases: a dataset folder or a folder of volume files.

    A folder holding one DICOM series is a single image, not a batch.

    Raises:
        InputError: ``path`` is a folder without anything usable (see ``find_cases``).
    """
    path = Path(path)
    if not path.is_dir():
        return False
    return any(case.image != path for case in find_cases(path))


def match_case_files(
    names: Sequence[str], folder: str | Path
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Volume files of ``folder`` matching each case name.

    A file matches case ``NAME`` when its name without extension is ``NAME`` (nnU-Net's label
    naming, ``NAME.nii.gz``); failing that, when its case name is ``NAME`` (so ``NAME_0000``
    files match too). Hidden files are ignored.

    Args:
        names: Case names.
        folder: Folder of files (annotations, labels...).

    Returns:
        ``(matches, unmatched)``: case name -> matching files (empty when none, several when
        ambiguous), and the volume files matching no case.

    Raises:
        InputError: ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError("no such folder", folder)
    if not folder.is_dir():
        raise InputError("is a file; batch runs need a folder here (files named CASE.nii.gz)",
                         folder)
    files = sorted(p for p in folder.iterdir()
                   if not p.name.startswith(".") and p.is_file() and is_volume_file(p))
    by_stem: dict[str, list[Path]] = {}
    by_case: dict[str, list[Path]] = {}
    for file in files:
        by_stem.setdefault(split_extension(file)[0], []).append(file)
        by_case.setdefault(case_name(file), []).append(file)
    matches = {name: by_stem.get(name) or by_case.get(name, []) for name in names}
    used = {file for found in matches.values() for file in found}
    return matches, [file for file in files if file not in used]


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


class _Heartbeat:
    """Background thread refreshing the lock currently held, every ``interval`` seconds."""

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

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, SparsesegError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _remove_orphans(target: Path) -> None:
    """Delete temporary files a killed writer of ``target`` left (``atomic_path`` naming)."""
    stem, ext = split_extension(target)
    for orphan in target.parent.glob(f".{stem}.tmp-*{ext}"):
        with contextlib.suppress(OSError):
            orphan.unlink()
            log.debug("removed %s left by an interrupted run", orphan)


def prepare_output(output: str | Path) -> Path:
    """Create the output folder (and parents) of a batch run.

    Raises:
        InputError: ``output`` is a file, or cannot be created.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a folder (batch runs write CASE.nii.gz files in "
                         "a folder)", output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror or exc})",
                         output) from None
    return output


@contextlib.contextmanager
def _progress(total: int, enabled: bool, desc: str) -> Iterator[object]:
    from tqdm.auto import tqdm

    if not enabled:
        with tqdm(total=total, disable=True) as bar:
            yield bar
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(total=total, desc=desc, unit="case") as bar:
        yield bar


def run_batch(
    cases: Sequence[Case],
    *,
    output: str | Path,
    work: Callable[[Case], R],
    save: Callable[[R, Path], object],
    num_parts: int = 1,
    part_id: int = 0,
    skip_existing: bool = False,
    progress: bool = False,
    desc: str = "cases",
    poll: float = 1.0,
    stale_after: float = STALE_AFTER,
) -> BatchReport:
    """Compute and write ``OUTPUT/CASE.nii.gz`` for the cases of one part.

    Cases locked by another live worker are deferred and revisited every ``poll`` seconds
    until that worker has written them (then counted in ``elsewhere`` with
    ``skip_existing``) or released them; the call returns only when every case of the
    part is written or failed.

    Args:
        cases: All cases (the split is applied here, on sorted case names).
        output: Output folder (created).
        work: Computes one case's result; any exception marks that case failed (logged
            with the exception's one-line message) and the batch goes on.
        save: Writes a result to the given path atomically; an exception stops the batch.
        num_parts: Number of parts the cases are split into (workers, array tasks).
        part_id: This worker's part, ``0 .. num_parts - 1``.
        skip_existing: Skip cases whose output file exists (resume an interrupted run).
        progress: Show a progress bar over cases.
        desc: Progress bar label.
        poll: Seconds between visits of cases locked by other workers.
        stale_after: Seconds after which an unrefreshed lock is taken over.

    Returns:
        What happened to each case of the part. The summary is logged.

    Raises:
        SparsesegError: Invalid split, an output path that is also an input, or the output
            cannot be written (disk full, read-only folder); outputs written before remain.
    """
    todo = split_parts(cases, num_parts, part_id)
    output = prepare_output(output)
    inputs = {p.resolve() for c in cases for p in (c.image, c.label) if p is not None}
    for case in todo:
        target = output_path(output, case.name)
        if target.resolve() in inputs:
            raise InputError("would overwrite an input file; choose another output folder",
                             target)
    report = BatchReport(total=len(todo))
    if num_parts > 1:
        log.info("part %d of %d (0-based): %d of %d cases", part_id, num_parts, len(todo),
                 len(cases))
    deferred: set[str] = set()
    interval = min(60.0, stale_after / 10)
    with _progress(len(todo), progress, desc) as bar, _Heartbeat(interval) as beat:
        pending = list(todo)
        try:
            while pending:
                busy = []
                for case in pending:
                    if _visit(case, output, work, save, report, beat, skip_existing,
                              stale_after, waited=case.name in deferred):
                        bar.update(1)
                    else:
                        busy.append(case)
                if busy:
                    (log.debug if deferred else log.info)(
                        "waiting for %d case(s) locked by other workers", len(busy))
                    deferred.update(c.name for c in busy)
                    time.sleep(poll)
                pending = busy
        except SparsesegError:
            log.info("%s stopped: %s", desc, report.summary())
            raise
    log.info("%s: %s", desc, report.summary())
    return report


def _visit(
    case: Case,
    output: Path,
    work: Callable[[Case], R],
    save: Callable[[R, Path], object],
    report: BatchReport,
    beat: _Heartbeat,
    skip_existing: bool,
    stale_after: float,
    *,
    waited: bool,
) -> bool:
    """Deal with one case; ``False`` when another worker holds its lock."""
    target = output_path(output, case.name)
    lock = CaseLock(target, stale_after=stale_after)
    if skip_existing and target.exists():
        # A worker killed between writing the output and removing its lock leaves a stale
        # lock beside a complete output: clear it (a live owner's lock is left alone).
        if lock.path.exists() and lock.acquire():
            lock.release()
        (report.elsewhere if waited else report.skipped).append(case.name)
        report.outputs[case.name] = target
        return True
    if not lock.acquire():
        return False
    beat.lock = lock
    try:
        _one_case(case, target, work, save, report, skip_existing)
    finally:
        beat.lock = None
        lock.release()
    return True


def _one_case(
    case: Case,
    target: Path,
    work: Callable[[Case], R],
    save: Callable[[R, Path], object],
    report: BatchReport,
    skip_existing: bool,
) -> None:
    if skip_existing and target.exists():  # another worker wrote it while we claimed it
        report.elsewhere.append(case.name)
        report.outputs[case.name] = target
        return
    _remove_orphans(target)
    try:
        result = work(case)
    except Exception as exc:  # one bad case must not stop the batch
        reason = _one_line(exc)
        if not (isinstance(exc, SparsesegError) and exc.path is not None):
            reason = f"{case.image}: {reason}"
        report.failed[case.name] = reason
        log.error("case %s failed: %s", case.name, reason)
        log.debug("case %s", case.name, exc_info=True)
        return
    try:
        save(result, target)
    except OSError as exc:
        raise InputError(f"cannot write ({exc.strerror or exc})", target) from None
    report.done.append(case.name)
    report.outputs[case.name] = target
    log.debug("%s -> %s", case.image, target)
