"""Running a batch: compute and write each case of a part, collect failures, report.

:func:`run_batch` is the loop the batch commands share; see :mod:`sparseseg.batch` for what
it guarantees (atomic outputs, ``--continue``, locks, failed cases collected, output errors
fatal).

Example:
    >>> report = run_batch(cases, output="labels", work=segment, save=write)  # doctest: +SKIP
    >>> report.summary()  # doctest: +SKIP
    '3 done, 0 skipped (already written), 0 failed'
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sparseseg.batch.cases import output_path, split_parts
from sparseseg.batch.lock import STALE_AFTER, CaseLock, Heartbeat
from sparseseg.errors import InputError, SparsesegError
from sparseseg.io.dataset import Case
from sparseseg.io.formats import split_extension

log = logging.getLogger(__name__)

R = TypeVar("R")


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
    with _progress(len(todo), progress, desc) as bar, Heartbeat(interval) as beat:
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
    beat: Heartbeat,
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
