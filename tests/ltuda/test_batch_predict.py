"""``sparseseg ltuda predict`` over folders: faults, --continue, parts, concurrent workers."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sparseseg.batch import BatchError
from sparseseg.batch import lock as batch  # the module of _open_exclusive
from sparseseg.cli.main import main
from sparseseg.data import make_phantom_dataset
from sparseseg.io import read_label
from sparseseg.ltuda import DatasetSpec, predict, train

N_CASES = 6


@pytest.fixture(scope="module")
def tiny_ltuda(tmp_path_factory) -> Path:
    """A 1-epoch LTUDA model on one tiny phantom dataset (seconds on a CPU)."""
    root = tmp_path_factory.mktemp("ltuda_batch")
    data = make_phantom_dataset(root / "train", n_cases=2, shape=(32, 28, 4), seed=0)
    return train(output=root / "model", datasets=[DatasetSpec(data, {"liver": [1]})],
                 method="partial", epochs=1, size=16, base_channels=4, progress=False,
                 device="cpu", val_fraction=0.0)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """A dataset folder of 6 phantoms to predict."""
    return make_phantom_dataset(tmp_path_factory.mktemp("ltuda_cases") / "data",
                                n_cases=N_CASES, shape=(32, 28, 4), seed=40)


@pytest.fixture(scope="module")
def clean(tiny_ltuda, cases, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("ltuda_clean") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the subprocesses (OMP_NUM_THREADS=1): same numerics
    try:
        written = predict(model=tiny_ltuda, inputs=cases, output=out, device="cpu",
                          progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in written] == [f"phantom_{i:03d}.nii.gz" for i in range(N_CASES)]
    return _outputs(out)


def _argv(model: Path, inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["ltuda", "predict", "-q", "-m", str(model), "-i", str(inputs), "-o", str(out),
            "--device", "cpu", *extra]


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_label(p).array for p in sorted(folder.glob("*.nii.gz"))
            if not p.name.startswith(".")}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") or p.name.endswith(".lock"))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _error_lines(capsys) -> list[str]:
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines


def test_corrupt_case_is_reported_and_the_others_written(tiny_ltuda, cases, clean, tmp_path,
                                                         capsys):
    data = shutil.copytree(cases, tmp_path / "data")
    corrupt = data / "imagesTr" / "phantom_002_0000.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:-100])
    out = tmp_path / "out"
    assert main(_argv(tiny_ltuda, data, out)) == 1
    err = _error_lines(capsys)
    assert len(err) == 2
    assert err[0].startswith(f"case phantom_002 failed: {corrupt}: is truncated")
    assert err[1].startswith("sparseseg: error: 1 of 6 cases failed (phantom_002: ")
    _same(_outputs(out), {k: v for k, v in clean.items() if k != "phantom_002.nii.gz"})
    assert _leftovers(out) == []
    with pytest.raises(BatchError) as info:  # the Python API says the same
        predict(model=tiny_ltuda, inputs=data, output=out, skip_existing=True, progress=False)
    assert list(info.value.report.failed) == ["phantom_002"]
    assert info.value.report.skipped == [f"phantom_{i:03d}" for i in (0, 1, 3, 4, 5)]


def test_parts_and_continue(tiny_ltuda, cases, clean, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_argv(tiny_ltuda, cases, out, "--num-parts", "4", "--part-id", "1")) == 0
    assert sorted(_outputs(out)) == ["phantom_001.nii.gz", "phantom_005.nii.gz"]
    (out / "phantom_005.nii.gz").write_bytes(b"kept as is with --continue")
    written = predict(model=tiny_ltuda, inputs=cases, output=out, skip_existing=True,
                      progress=False, num_parts=2, part_id=1)
    assert [p.name for p in written] == ["phantom_001.nii.gz", "phantom_003.nii.gz",
                                         "phantom_005.nii.gz"]
    assert (out / "phantom_005.nii.gz").read_bytes() == b"kept as is with --continue"
    for bad, message in (
        (["--part-id", "-1"], "--part-id must be in 0..0 for --num-parts 1 (0-based), got -1"),
        (["--num-parts", "0"], "--num-parts must be at least 1, got 0"),
    ):
        assert main(_argv(tiny_ltuda, cases, out, *bad)) == 2
        assert _error_lines(capsys) == [f"sparseseg: error: {message}"]
    image = cases / "imagesTr" / "phantom_000_0000.nii.gz"
    assert main(_argv(tiny_ltuda, image, tmp_path / "one.nii.gz", "--continue")) == 2
    assert "need an output folder" in _error_lines(capsys)[0]
    assert not (tmp_path / "one.nii.gz").exists()


def test_disk_full_stops_with_one_line_and_keeps_earlier_outputs(tiny_ltuda, cases, clean,
                                                                 tmp_path, capsys, monkeypatch):
    real_write = sitk.WriteImage
    calls = []

    def write_until_full(image, path, *args):
        calls.append(path)
        if len(calls) < 3:
            return real_write(image, path, *args)
        Path(path).write_bytes(b"\x1f\x8b partial")  # the part that fit on the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(sitk, "WriteImage", write_until_full)
    out = tmp_path / "out"
    assert main(_argv(tiny_ltuda, cases, out)) == 2
    err = _error_lines(capsys)
    assert err == [f"sparseseg: error: {out / 'phantom_002.nii.gz'}: cannot write "
                   "(No space left on device)"]
    _same(_outputs(out), {k: clean[k] for k in ("phantom_000.nii.gz", "phantom_001.nii.gz")})
    assert _leftovers(out) == []


def test_read_only_output_folder(tiny_ltuda, cases, clean, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(_argv(tiny_ltuda, cases, out, "--num-parts", "2")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if os.geteuid() == 0:  # chmod does not stop root: simulate the refusal a read-only
        def refuse(path):  # folder gives when the first file is created in it
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        monkeypatch.setattr(batch, "_open_exclusive", refuse)
    else:
        out.chmod(0o555)
    try:
        assert main(_argv(tiny_ltuda, cases, out)) == 2
    finally:
        out.chmod(0o755)
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"sparseseg: error: {out}: cannot write in the "
                                               "output folder (")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_two_concurrent_workers_with_continue(tiny_ltuda, cases, clean, tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "sparseseg", *_argv(tiny_ltuda, cases, out, "--continue")]
    argv.remove("-q")  # keep the summaries
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(2)]
    errs = [p.communicate(timeout=240)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    counts = []
    for err in errs:
        found = re.search(r"ltuda predict: (\d+) done, (\d+) skipped \(already written\)"
                          r"(?:, (\d+) done by other workers)?, 0 failed", err)
        assert found, err
        counts.append([int(g or 0) for g in found.groups()])
    assert counts[0][0] + counts[1][0] == N_CASES  # no case computed twice
    assert all(sum(c) == N_CASES for c in counts)  # each accounts for every case
    _same(_outputs(out), clean)
    assert _leftovers(out) == []
