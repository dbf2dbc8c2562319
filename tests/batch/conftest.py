"""Helpers of the batch tests: cases that need no files, lock files of other workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparseseg.io import Case

FakeLock = Callable[..., Path]


@pytest.fixture
def make_cases() -> Callable[..., list[Case]]:
    """Cases that need no files: ``make_cases(names, root=None)``.

    Case ``NAME`` has the image ``ROOT/NAME_0000.nii.gz``; ``root`` defaults to ``/nonexistent``.
    """

    def make(names: list[str], root: Path | None = None) -> list[Case]:
        root = root or Path("/nonexistent")
        return [Case(n, root / f"{n}_0000.nii.gz") for n in names]

    return make


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def fake_lock() -> FakeLock:
    """Write the lock file another worker would hold on ``target``; returns its path.

    Call as ``fake_lock(target, pid=PID, host=None, age=0.0)``: ``host`` defaults to this host,
    ``age`` (seconds) sets the file's modification time in the past.
    """

    def write(target: Path, *, pid: int, host: str | None = None, age: float = 0.0) -> Path:
        lock = target.with_name(target.name + ".lock")
        lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                    "token": "t", "started": 0}))
        if age:
            past = time.time() - age
            os.utime(lock, (past, past))
        return lock

    return write
