"""Run one prediction over many cases: split them across workers, skip, lock, collect failures.

The batch commands (``sparseseg oneseg propagate`` and ``sparseseg ltuda predict`` with folder
inputs) share this package: :mod:`~sparseseg.batch.cases` (matching files to cases, splitting
into parts, output paths), :mod:`~sparseseg.batch.lock` (per-case lock files and their
heartbeat) and :mod:`~sparseseg.batch.runner` (:func:`run_batch` and its report), all
re-exported here. It lists no files itself; the caller gives it cases
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

from sparseseg.batch.cases import (
    OUTPUT_EXTENSION,
    is_batch_input,
    match_case_files,
    output_path,
    split_parts,
    validate_parts,
)
from sparseseg.batch.lock import LOCK_SUFFIX, STALE_AFTER, CaseLock, Heartbeat
from sparseseg.batch.runner import BatchError, BatchReport, prepare_output, run_batch

__all__ = [
    "LOCK_SUFFIX",
    "OUTPUT_EXTENSION",
    "STALE_AFTER",
    "BatchError",
    "BatchReport",
    "CaseLock",
    "Heartbeat",
    "is_batch_input",
    "match_case_files",
    "output_path",
    "prepare_output",
    "run_batch",
    "split_parts",
    "validate_parts",
]
