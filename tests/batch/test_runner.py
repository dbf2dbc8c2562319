"""The batch runner: write, skip, wait for locks, collect failures, stop on output errors."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparseseg.batch import (
    BatchError,
    BatchReport,
    CaseLock,
    output_path,
    prepare_output,
    run_batch,
)
from sparseseg.batch import lock as lock_module
from sparseseg.errors import InputError
from sparseseg.io import Case, atomic_path

MakeCases = Callable[..., list[Case]]
FakeLock = Callable[..., Path]


def _text_save(result: str, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(result)


def _leftovers(folder: Path) -> list[str]:
    """Temporary or lock files in a folder (none must remain after a run)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") or p.name.endswith(".lock"))


# --- running ---------------------------------------------------------------------------------


def test_run_writes_skips_and_recomputes(tmp_path: Path, make_cases: MakeCases) -> None:
    calls: list[str] = []

    def work(case: Case) -> str:
        calls.append(case.name)
        return f"result {case.name}"

    out = tmp_path / "out"
    report = run_batch(make_cases(["b", "a", "c"]), output=out, work=work, save=_text_save)
    assert report.done == ["a", "b", "c"] and report.ok and report.total == 3
    assert report.outputs == {n: out / f"{n}.nii.gz" for n in "abc"}
    assert (out / "b.nii.gz").read_text() == "result b"
    assert _leftovers(out) == []

    (out / "b.nii.gz").unlink()
    calls.clear()
    report = run_batch(make_cases(["a", "b", "c"]), output=out, work=work, save=_text_save,
                       skip_existing=True)
    assert calls == ["b"] and report.done == ["b"] and report.skipped == ["a", "c"]
    assert report.summary() == "1 done, 2 skipped (already written), 0 failed"

    calls.clear()
    run_batch(make_cases(["a", "b", "c"]), output=out, work=work, save=_text_save)
    assert calls == ["a", "b", "c"]  # without skip_existing every case is recomputed


def test_a_failing_case_is_reported_and_the_others_done(tmp_path: Path, make_cases: MakeCases,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def work(case: Case) -> str:
        if case.name == "b":
            raise InputError("is truncated or corrupt (CRC check failed)\nsecond line",
                             case.image)
        if case.name == "d":
            raise RuntimeError("unexpected\nproblem")
        return case.name

    with caplog.at_level(logging.INFO, logger="sparseseg.batch"):
        report = run_batch(make_cases(list("abcde")), output=tmp_path, work=work, save=_text_save)
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


def test_disk_full_stops_the_run_and_keeps_earlier_outputs(tmp_path: Path,
                                                           make_cases: MakeCases) -> None:
    def save(result: str, target: Path) -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            if target.name == "c.nii.gz":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            tmp.write_text(result)

    with pytest.raises(InputError, match="No space left on device") as info:
        run_batch(make_cases(list("abcd")), output=tmp_path, work=lambda c: c.name, save=save)
    assert str(info.value).startswith(str(tmp_path / "c.nii.gz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert (tmp_path / "a.nii.gz").read_text() == "a"


def test_unwritable_output_folder_is_one_clear_error(tmp_path: Path, make_cases: MakeCases,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    run_batch(make_cases(["a"]), output=out, work=lambda c: c.name, save=_text_save)
    if os.geteuid() == 0:  # root ignores permissions: simulate what a read-only folder does
        def refuse(path: Path) -> int:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(lock_module, "_open_exclusive", refuse)
    else:
        out.chmod(0o555)
    try:
        with pytest.raises(InputError, match=r"cannot write in the output folder \(Permission"):
            run_batch(make_cases(["a", "b"]), output=out, work=lambda c: c.name, save=_text_save)
    finally:
        out.chmod(0o755)
    assert (out / "a.nii.gz").read_text() == "a" and not (out / "b.nii.gz").exists()
    assert _leftovers(out) == []


def test_output_that_is_an_input_is_refused(tmp_path: Path, make_cases: MakeCases) -> None:
    image = tmp_path / "a.nii.gz"
    image.write_bytes(b"image")
    with pytest.raises(InputError, match="would overwrite an input"):
        run_batch([Case("a", image)], output=tmp_path, work=lambda c: "x", save=_text_save)
    assert image.read_bytes() == b"image"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        run_batch(make_cases(["a"]), output=tmp_path / "file", work=str, save=_text_save)


def test_prepare_output_creates_the_folder(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    assert prepare_output(nested) == nested and nested.is_dir()
    assert prepare_output(str(nested)) == nested  # existing: fine
    (tmp_path / "file").write_text("keep")
    with pytest.raises(InputError, match="exists and is not a folder"):
        prepare_output(tmp_path / "file")
    with pytest.raises(InputError, match="cannot create the output folder"):
        prepare_output(tmp_path / "file" / "below")
    assert (tmp_path / "file").read_text() == "keep"


def test_report_summary_and_error_message() -> None:
    report = BatchReport(total=9, done=["a"], skipped=["b", "c"], elsewhere=["d"],
                         failed={"e": "/x/e.nii.gz: is corrupt"})
    assert not report.ok and BatchReport().ok
    assert report.summary() == ("1 done, 2 skipped (already written), 1 done by other workers, "
                                "1 failed")
    assert str(BatchError(report)) == ("1 of 9 cases failed (e: /x/e.nii.gz: is corrupt); "
                                       "the others are written")
    many = BatchReport(total=7, failed={n: "bad" for n in "gfedcba"})
    assert str(BatchError(many)).startswith("7 of 7 cases failed (a, b, c, d, e ...)")
    assert BatchError(many).report is many


def test_orphan_temp_files_of_a_killed_writer_are_removed(tmp_path: Path,
                                                          make_cases: MakeCases) -> None:
    target = output_path(tmp_path, "a")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        name = tmp.name  # the writer's real temporary name
        raise KeyboardInterrupt
    (tmp_path / name).write_text("half written")
    (tmp_path / ".b.tmp-12345678.nii.gz").write_text("another case's")
    run_batch(make_cases(["a"]), output=tmp_path, work=lambda c: "a", save=_text_save)
    assert _leftovers(tmp_path) == [".b.tmp-12345678.nii.gz"]


# --- locks during a run ----------------------------------------------------------------------


def test_continue_clears_the_stale_lock_of_a_written_case(
    tmp_path: Path, make_cases: MakeCases, fake_lock: FakeLock, dead_pid: int
) -> None:
    # A worker killed after renaming its output into place but before unlocking.
    (tmp_path / "a.nii.gz").write_text("result a")
    fake_lock(tmp_path / "a.nii.gz", pid=dead_pid)
    # A live worker that has just written its output and not yet unlocked.
    (tmp_path / "b.nii.gz").write_text("result b")
    live = CaseLock(tmp_path / "b.nii.gz")
    assert live.acquire()
    report = run_batch(make_cases(["a", "b"]), output=tmp_path, work=lambda c: "new",
                       save=_text_save, skip_existing=True)
    assert report.skipped == ["a", "b"] and report.done == []
    assert (tmp_path / "a.nii.gz").read_text() == "result a"
    assert _leftovers(tmp_path) == ["b.nii.gz.lock"]  # the live owner's lock is untouched
    live.release()
    assert _leftovers(tmp_path) == []


def test_heartbeat_keeps_a_long_case_locked(tmp_path: Path, make_cases: MakeCases) -> None:
    ages: list[float] = []

    def slow(case: Case) -> str:
        time.sleep(0.6)
        ages.append(time.time() - (tmp_path / "a.nii.gz.lock").stat().st_mtime)
        # Another worker with the same staleness rule must not take it over.
        assert not CaseLock(tmp_path / "a.nii.gz", stale_after=0.3).acquire()
        return "a"

    run_batch(make_cases(["a"]), output=tmp_path, work=slow, save=_text_save, stale_after=0.3)
    assert ages and ages[0] < 0.3


def test_a_case_locked_elsewhere_is_waited_for(tmp_path: Path, make_cases: MakeCases) -> None:
    target = output_path(tmp_path, "b")
    other = CaseLock(target)
    assert other.acquire()
    calls: list[str] = []
    report: dict[str, BatchReport] = {}

    def run() -> None:
        report["r"] = run_batch(make_cases(list("abc")), output=tmp_path, save=_text_save,
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
    assert not thread.is_alive()
    assert calls == ["a", "c"]
    assert report["r"].elsewhere == ["b"] and report["r"].done == ["a", "c"]
    assert target.read_text() == "written by the other worker"


def test_concurrent_workers_split_the_cases(tmp_path: Path, make_cases: MakeCases) -> None:
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

        reports[tag] = run_batch(make_cases(names), output=tmp_path, work=work, save=_text_save,
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
    assert all((tmp_path / f"{n}.nii.gz").read_text() == n for n in names)
    outputs = {**reports["A"].outputs, **reports["B"].outputs}
    assert outputs == {n: tmp_path / f"{n}.nii.gz" for n in names}
