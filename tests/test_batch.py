"""The batch runner: split, skip, per-case locks, failures collected, output errors fatal."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sparseseg import batch
from sparseseg.batch import (
    BatchError,
    BatchReport,
    CaseLock,
    match_case_files,
    output_path,
    run_batch,
    split_parts,
    validate_parts,
)
from sparseseg.errors import InputError, SparsesegError
from sparseseg.io import Case, atomic_path


def _cases(names: list[str], root: Path | None = None) -> list[Case]:
    root = root or Path("/nonexistent")
    return [Case(n, root / f"{n}_0000.nii.gz") for n in names]


def _text_save(result: str, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(result)


def _leftovers(folder: Path) -> list[str]:
    """Temporary or lock files in a folder (none must remain after a run)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") or p.name.endswith(".lock"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- splitting -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_cases", [0, 1, 5, 12])
@pytest.mark.parametrize("num_parts", [1, 2, 3, 7])
def test_every_case_in_exactly_one_part(n_cases: int, num_parts: int) -> None:
    names = [f"c{i:02d}" for i in range(n_cases)]
    shuffled = _cases(names[::-1][1::2] + names[::-1][0::2])  # input order must not matter
    parts = [[c.name for c in split_parts(shuffled, num_parts, i)] for i in range(num_parts)]
    assert sorted(n for p in parts for n in p) == names
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # nnU-Net's convention: sorted case names, every num_parts-th from part_id on.
    assert parts == [names[i::num_parts] for i in range(num_parts)]


@pytest.mark.parametrize(("num_parts", "part_id", "message"), [
    (2, 2, "0..1"), (2, -1, "0..1"), (0, 0, "at least 1"), (1, 1, "0..0"),
])
def test_invalid_split_is_refused(num_parts: int, part_id: int, message: str) -> None:
    with pytest.raises(SparsesegError, match=message) as info:
        validate_parts(num_parts, part_id)
    assert "\n" not in str(info.value)


# --- matching files to cases -----------------------------------------------------------------


def test_annotations_match_cases_by_name(tmp_path: Path) -> None:
    for name in ("la_x.nii.gz", "case_0001.nii.gz", "other_0000.nrrd", "dup.nii.gz",
                 "dup.mha", "stray.nii.gz", ".la_x.tmp-1234abcd.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    matches, unmatched = match_case_files(
        ["la_x", "case_0001", "other", "dup", "missing"], tmp_path)
    assert matches["la_x"] == [tmp_path / "la_x.nii.gz"]
    # A case whose own name ends in _NNNN is matched by its full name, not truncated.
    assert matches["case_0001"] == [tmp_path / "case_0001.nii.gz"]
    assert matches["other"] == [tmp_path / "other_0000.nrrd"]
    assert len(matches["dup"]) == 2
    assert matches["missing"] == []
    assert unmatched == [tmp_path / "stray.nii.gz"]
    with pytest.raises(InputError, match="no such folder"):
        match_case_files(["a"], tmp_path / "none")
    with pytest.raises(InputError, match="is a file"):
        match_case_files(["a"], tmp_path / "la_x.nii.gz")


# --- running ---------------------------------------------------------------------------------


def test_run_writes_skips_and_recomputes(tmp_path: Path) -> None:
    calls: list[str] = []

    def work(case: Case) -> str:
        calls.append(case.name)
        return f"result {case.name}"

    out = tmp_path / "out"
    report = run_batch(_cases(["b", "a", "c"]), output=out, work=work, save=_text_save)
    assert report.done == ["a", "b", "c"] and report.ok and report.total == 3
    assert report.outputs == {n: out / f"{n}.nii.gz" for n in "abc"}
    assert (out / "b.nii.gz").read_text() == "result b"
    assert _leftovers(out) == []

    (out / "b.nii.gz").unlink()
    calls.clear()
    report = run_batch(_cases(["a", "b", "c"]), output=out, work=work, save=_text_save,
                       skip_existing=True)
    assert calls == ["b"] and report.done == ["b"] and report.skipped == ["a", "c"]
    assert report.summary() == "1 done, 2 skipped (already written), 0 failed"

    calls.clear()
    run_batch(_cases(["a", "b", "c"]), output=out, work=work, save=_text_save)
    assert calls == ["a", "b", "c"]  # without skip_existing every case is recomputed


def test_a_failing_case_is_reported_and_the_others_done(tmp_path: Path, caplog) -> None:
    def work(case: Case) -> str:
        if case.name == "b":
            raise InputError("is truncated or corrupt (CRC check failed)\nsecond line",
                             case.image)
        if case.name == "d":
            raise RuntimeError("unexpected\nproblem")
        return case.name

    with caplog.at_level(logging.INFO, logger="sparseseg.batch"):
        report = run_batch(_cases(list("abcde")), output=tmp_path, work=work, save=_text_save)
    assert report.done == ["a", "c", "e"] and set(report.failed) == {"b", "d"}
    assert report.failed["b"].startswith("/nonexistent/b_0000.nii.gz: is truncated")
    assert report.failed["d"] == "/nonexistent/d_0000.nii.gz: RuntimeError: unexpected problem"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"case b failed: {report.failed['b']}",
                      f"case d failed: {report.failed['d']}"]
    assert all("\n" not in e for e in errors)
    assert "3 done, 0 skipped (already written), 2 failed" in caplog.text
    assert not (tmp_path / "b.nii.gz").exists() and _leftovers(tmp_path) == []
    message = str(BatchError(report))
    assert message.startswith("2 of 5 cases failed (b, d)") and "\n" not in message


def test_disk_full_stops_the_run_and_keeps_earlier_outputs(tmp_path: Path) -> None:
    def save(result: str, target: Path) -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            if target.name == "c.nii.gz":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            tmp.write_text(result)

    with pytest.raises(InputError, match="No space left on device") as info:
        run_batch(_cases(list("abcd")), output=tmp_path, work=lambda c: c.name, save=save)
    assert str(info.value).startswith(str(tmp_path / "c.nii.gz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert (tmp_path / "a.nii.gz").read_text() == "a"


def test_unwritable_output_folder_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    run_batch(_cases(["a"]), output=out, work=lambda c: c.name, save=_text_save)
    if os.geteuid() == 0:  # root ignores permissions: simulate what a read-only folder does
        def refuse(path: Path) -> int:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(batch, "_open_exclusive", refuse)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(InputError, match=r"cannot write in the output folder \(Permission"):
            run_batch(_cases(["a", "b"]), output=out, work=lambda c: c.name, save=_text_save)
    finally:
        out.chmod(0o755)
    assert (out / "a.nii.gz").read_text() == "a" and not (out / "b.nii.gz").exists()
    assert _leftovers(out) == []


def test_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "a.nii.gz"
    image.write_bytes(b"image")
    with pytest.raises(InputError, match="would overwrite an input"):
        run_batch([Case("a", image)], output=tmp_path, work=lambda c: "x", save=_text_save)
    assert image.read_bytes() == b"image"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        run_batch(_cases(["a"]), output=tmp_path / "file", work=str, save=_text_save)


def test_orphan_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    target = output_path(tmp_path, "a")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        name = tmp.name  # the writer's real temporary name
        raise KeyboardInterrupt
    (tmp_path / name).write_text("half written")
    (tmp_path / ".b.tmp-12345678.nii.gz").write_text("another case's")
    run_batch(_cases(["a"]), output=tmp_path, work=lambda c: "a", save=_text_save)
    assert _leftovers(tmp_path) == [".b.tmp-12345678.nii.gz"]


# --- locks -----------------------------------------------------------------------------------


def _fake_lock(target: Path, *, pid: int, host: str | None = None, age: float = 0.0) -> Path:
    lock = target.with_name(target.name + ".lock")
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "token": "t", "started": 0}))
    if age:
        past = time.time() - age
        os.utime(lock, (past, past))
    return lock


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    target = tmp_path / "a.nii.gz"
    first, second = CaseLock(target), CaseLock(target)
    assert first.acquire() and first.held
    record = json.loads(first.path.read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not second.acquire()  # held by a live worker (here: this process)
    first.release()
    assert not first.path.exists()
    assert second.acquire()
    second.release()


@pytest.mark.parametrize(("owner", "stale"), [
    ("dead pid on this host", True),
    ("own pid, not held", True),
    ("live pid, other host", False),
    ("live pid, other host, not refreshed", True),
    ("live pid on this host, not refreshed", True),
    ("garbled, fresh", False),
    ("garbled, old", True),
])
def test_stale_locks_are_taken_over(tmp_path: Path, owner: str, stale: bool) -> None:
    target = tmp_path / "a.nii.gz"
    age = 120.0 if "not refreshed" in owner or "old" in owner else 0.0
    if owner.startswith("dead"):
        lock = _fake_lock(target, pid=_dead_pid())
    elif owner.startswith("own"):
        lock = _fake_lock(target, pid=os.getpid())
    elif "other host" in owner:
        lock = _fake_lock(target, pid=os.getppid(), host="elsewhere.invalid", age=age)
    elif "live pid on this host" in owner:
        lock = _fake_lock(target, pid=os.getppid(), age=age)
    else:
        lock = target.with_name(target.name + ".lock")
        lock.write_text("")
        if age:
            os.utime(lock, (time.time() - age,) * 2)
    claim = CaseLock(target, stale_after=60)
    assert claim.acquire() is stale
    if stale:
        assert json.loads(lock.read_text())["token"] == claim.token
        claim.release()
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    else:
        assert lock.exists()


def test_continue_clears_the_stale_lock_of_a_written_case(tmp_path: Path) -> None:
    # A worker killed after renaming its output into place but before unlocking.
    (tmp_path / "a.nii.gz").write_text("result a")
    _fake_lock(tmp_path / "a.nii.gz", pid=_dead_pid())
    # A live worker that has just written its output and not yet unlocked.
    (tmp_path / "b.nii.gz").write_text("result b")
    live = CaseLock(tmp_path / "b.nii.gz")
    assert live.acquire()
    report = run_batch(_cases(["a", "b"]), output=tmp_path, work=lambda c: "new",
                       save=_text_save, skip_existing=True)
    assert report.skipped == ["a", "b"] and report.done == []
    assert (tmp_path / "a.nii.gz").read_text() == "result a"
    assert _leftovers(tmp_path) == ["b.nii.gz.lock"]  # the live owner's lock is untouched
    live.release()
    assert _leftovers(tmp_path) == []


def test_heartbeat_keeps_a_long_case_locked(tmp_path: Path) -> None:
    ages: list[float] = []

    def slow(case: Case) -> str:
        time.sleep(0.6)
        ages.append(time.time() - (tmp_path / "a.nii.gz.lock").stat().st_mtime)
        # Another worker with the same staleness rule must not take it over.
        assert not CaseLock(tmp_path / "a.nii.gz", stale_after=0.3).acquire()
        return "a"

    run_batch(_cases(["a"]), output=tmp_path, work=slow, save=_text_save, stale_after=0.3)
    assert ages and ages[0] < 0.3


def test_a_case_locked_elsewhere_is_waited_for(tmp_path: Path) -> None:
    target = output_path(tmp_path, "b")
    other = CaseLock(target)
    assert other.acquire()
    calls: list[str] = []
    report: dict[str, BatchReport] = {}

    def run() -> None:
        report["r"] = run_batch(_cases(list("abc")), output=tmp_path, save=_text_save,
                                work=lambda c: calls.append(c.name) or c.name,
                                skip_existing=True, poll=0.05)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "c.nii.gz").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert thread.is_alive()  # still waiting for b
    _text_save("written by the other worker", target)
    other.release()
    thread.join(10)
    assert calls == ["a", "c"]
    assert report["r"].elsewhere == ["b"] and report["r"].done == ["a", "c"]
    assert target.read_text() == "written by the other worker"


def test_concurrent_workers_split_the_cases(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(8)]
    calls: list[tuple[str, str]] = []
    both_started = threading.Barrier(2, timeout=10)
    reports: dict[str, BatchReport] = {}

    def worker(tag: str) -> None:
        first = [True]

        def work(case: Case) -> str:
            calls.append((tag, case.name))
            if first[0]:  # both hold a case at the same time at least once
                first[0] = False
                both_started.wait()
            time.sleep(0.02)
            return case.name

        reports[tag] = run_batch(_cases(names), output=tmp_path, work=work, save=_text_save,
                                 skip_existing=True, poll=0.02)

    threads = [threading.Thread(target=worker, args=(t,)) for t in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    done = [name for _, name in calls]
    assert sorted(done) == names  # every case computed exactly once
    assert {tag for tag, _ in calls} == {"A", "B"}
    assert len(reports["A"].done) + len(reports["B"].done) == len(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{n}.nii.gz" for n in names]
