"""Per-case lock files: exclusive, released, stale ones taken over, kept fresh by a heartbeat."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

import pytest

from sparseseg.batch import LOCK_SUFFIX, CaseLock, Heartbeat
from sparseseg.batch import lock as lock_module
from sparseseg.errors import InputError


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    target = tmp_path / "a.nii.gz"
    first, second = CaseLock(target), CaseLock(target)
    assert first.path == tmp_path / f"a.nii.gz{LOCK_SUFFIX}" and not first.held
    assert first.acquire() and first.held
    assert first.acquire()  # already held: still ours, nothing rewritten
    record = json.loads(first.path.read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["token"] == first.token and record["started"] <= time.time()
    assert not second.acquire() and not second.held  # held by a live worker (this process)
    first.release()
    assert not first.path.exists() and not first.held
    first.release()  # releasing twice is a no-op
    assert second.acquire()
    assert json.loads(second.path.read_text())["token"] == second.token
    second.release()
    assert list(tmp_path.iterdir()) == []


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    target = tmp_path / "a.nii.gz"
    mine = CaseLock(target)
    assert mine.acquire()
    # Taken over meanwhile (we were judged dead): the new owner's file must stay.
    mine.path.unlink()
    other = CaseLock(target)
    assert other.acquire()
    mine.release()
    assert json.loads(other.path.read_text())["token"] == other.token
    other.release()


@pytest.mark.parametrize(("owner", "stale"), [
    ("dead pid on this host", True),
    ("own pid, not held", True),
    ("live pid, other host", False),
    ("live pid, other host, not refreshed", True),
    ("live pid on this host, not refreshed", True),
    ("garbled, fresh", False),
    ("garbled, old", True),
])
def test_stale_locks_are_taken_over(tmp_path: Path, fake_lock, dead_pid: int, owner: str,
                                    stale: bool) -> None:
    target = tmp_path / "a.nii.gz"
    age = 120.0 if "not refreshed" in owner or "old" in owner else 0.0
    if owner.startswith("dead"):
        lock = fake_lock(target, pid=dead_pid)
    elif owner.startswith("own"):
        lock = fake_lock(target, pid=os.getpid())
    elif "other host" in owner:
        lock = fake_lock(target, pid=os.getppid(), host="elsewhere.invalid", age=age)
    elif "live pid on this host" in owner:
        lock = fake_lock(target, pid=os.getppid(), age=age)
    else:
        lock = target.with_name(target.name + ".lock")
        lock.write_text("")
        if age:
            os.utime(lock, (time.time() - age,) * 2)
    before = lock.read_text()
    claim = CaseLock(target, stale_after=60)
    assert claim.acquire() is stale
    if stale:
        assert json.loads(lock.read_text())["token"] == claim.token
        claim.release()
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left aside
    else:
        assert lock.read_text() == before  # the owner's lock is untouched
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz.lock"]


def test_pid_alive() -> None:
    assert lock_module._pid_alive(os.getpid())
    assert lock_module._pid_alive(os.getppid())


def test_dead_pid_is_not_alive(dead_pid: int) -> None:
    assert not lock_module._pid_alive(dead_pid)


def test_unwritable_folder_is_an_input_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(lock_module, "_open_exclusive", refuse)
    claim = CaseLock(tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match=r"cannot write in the output folder \(Permission"):
        claim.acquire()
    assert not claim.held and list(tmp_path.iterdir()) == []
    assert claim.token not in lock_module._HELD  # no token left registered


def test_heartbeat_refreshes_the_held_lock(tmp_path: Path) -> None:
    claim = CaseLock(tmp_path / "a.nii.gz")
    assert claim.acquire()
    past = time.time() - 100
    os.utime(claim.path, (past, past))
    with Heartbeat(0.02) as beat:
        time.sleep(0.1)
        assert claim.path.stat().st_mtime == pytest.approx(past)  # no lock set: untouched
        beat.lock = claim
        deadline = time.monotonic() + 5
        while claim.path.stat().st_mtime < past + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        beat.lock = None
    assert time.time() - claim.path.stat().st_mtime < 5
    assert not beat._thread.is_alive()  # stopped on leaving the block
    claim.release()
