"""``sparseseg oneseg propagate`` over folders: matching, parts, --continue, faults, kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sparseseg import oneseg
from sparseseg.cli.main import main
from sparseseg.data.phantom import make_phantom
from sparseseg.io import read_label, read_volume, write_volume

SHAPE = (48, 40, 12)
SPACING = (2.0, 2.0, 4.0)
NAMES = [f"la_{i:03d}" for i in range(5)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An nnU-Net dataset folder of 5 phantoms and a folder of one-slice annotations."""
    root = tmp_path_factory.mktemp("oneseg_batch")
    (root / "data" / "imagesTr").mkdir(parents=True)
    (root / "ann").mkdir()
    for i, name in enumerate(NAMES):
        image, label = make_phantom(shape=SHAPE, spacing=SPACING, seed=20 + i)
        write_volume(root / "data" / "imagesTr" / f"{name}_0000.nii.gz", image.array, image)
        k = int(np.argmax((label.array == 1).sum(axis=(0, 1))))
        ann = np.zeros_like(label.array)
        ann[:, :, k] = label.array[:, :, k]
        write_volume(root / "ann" / f"{name}.nii.gz", ann, image)
    return root / "data", root / "ann"


def _argv(model: Path, images: Path, ann: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "oneseg", "propagate", "-m", str(model), "-i", str(images), "-a", str(ann),
            "-o", str(out), "--device", "cpu", *extra]


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_label(p).array for p in sorted(folder.glob("*.nii.gz"))
            if not p.name.startswith(".")}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") or p.name.endswith(".lock"))


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def clean_run(tiny_model, batch_data, tmp_path_factory) -> dict[str, np.ndarray]:
    """The outputs of one uninterrupted batch run."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(_argv(tiny_model, *batch_data, out)) == 0
    return _outputs(out)


def test_batch_matches_single_file_runs(tiny_model, batch_data, clean_run, tmp_path):
    images, ann = batch_data
    assert sorted(clean_run) == [f"{n}.nii.gz" for n in NAMES]
    name = NAMES[2]
    single = tmp_path / "single.nii.gz"
    argv = _argv(tiny_model, images / "imagesTr" / f"{name}_0000.nii.gz",
                 ann / f"{name}.nii.gz", single)
    assert main(argv) == 0  # the single-file mode is unchanged
    np.testing.assert_array_equal(read_label(single).array, clean_run[f"{name}.nii.gz"])
    assert clean_run[f"{name}.nii.gz"].any()
    # The Python API returns the written files, in case order.
    written = oneseg.api.propagate_batch(model=tiny_model, images=images, annotations=ann,
                                         output=tmp_path / "api", device="cpu",
                                         num_parts=2, part_id=1, progress=False)
    assert written == [tmp_path / "api" / f"{n}.nii.gz" for n in NAMES[1::2]]
    geometry = read_volume(images / "imagesTr" / f"{name}_0000.nii.gz")
    assert read_label(tmp_path / "api" / f"{NAMES[1]}.nii.gz").same_geometry(geometry)


def test_parts_cover_every_case_once(tiny_model, batch_data, clean_run, tmp_path, capsys):
    out = tmp_path / "out"
    seen = []
    for part in range(3):
        before = set(_outputs(out)) if out.exists() else set()
        assert main(_argv(tiny_model, *batch_data, out, "--num-parts", "3",
                          "--part-id", str(part))) == 0
        new = set(_outputs(out)) - before
        assert new == {f"{n}.nii.gz" for n in NAMES[part::3]}
        seen += sorted(new)
    assert sorted(seen) == sorted(clean_run)
    _assert_same(_outputs(out), clean_run)
    capsys.readouterr()
    assert main(_argv(tiny_model, *batch_data, out, "--num-parts", "3", "--part-id", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sparseseg: error: --part-id must be in 0..2 for --num-parts 3 (0-based), "
                   "got 3"]


def test_continue_skips_existing_outputs(tiny_model, batch_data, tmp_path, capsys):
    images, ann = batch_data
    out = tmp_path / "out"
    out.mkdir()
    reference = read_volume(images / "imagesTr" / f"{NAMES[0]}_0000.nii.gz")
    marker = np.full(SHAPE, 7, np.uint8)
    write_volume(out / f"{NAMES[0]}.nii.gz", marker, reference)
    assert main(_argv(tiny_model, images, ann, out, "--continue")[1:]) == 0  # not quiet
    assert "oneseg propagate: 4 done, 1 skipped (already written), 0 failed" in (
        capsys.readouterr().err)
    assert (read_label(out / f"{NAMES[0]}.nii.gz").array == 7).all()  # not recomputed
    assert main(_argv(tiny_model, images, ann, out)) == 0  # without --continue: recomputed
    assert not (read_label(out / f"{NAMES[0]}.nii.gz").array == 7).any()


def test_corrupt_volume_and_missing_annotation_fail_only_their_case(
    tiny_model, batch_data, clean_run, tmp_path, capsys
):
    images, ann = batch_data
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    for name in NAMES:
        (data / "imagesTr" / f"{name}_0000.nii.gz").write_bytes(
            (images / "imagesTr" / f"{name}_0000.nii.gz").read_bytes())
    corrupt = data / "imagesTr" / f"{NAMES[2]}_0000.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:-200])
    partial_ann = tmp_path / "ann"
    partial_ann.mkdir()
    for name in NAMES:
        if name != NAMES[3]:
            (partial_ann / f"{name}.nii.gz").write_bytes((ann / f"{name}.nii.gz").read_bytes())
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_argv(tiny_model, data, partial_ann, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    assert err[0].startswith(f"case {NAMES[2]} failed: {corrupt}: is truncated")
    assert err[1].startswith(f"case {NAMES[3]} failed: ") and "no annotation" in err[1]
    assert str(partial_ann / f"{NAMES[3]}.nii.gz") in err[1]
    assert err[2].startswith("sparseseg: error: 2 of 5 cases failed")
    assert "Traceback" not in "".join(err)
    expected = {k: v for k, v in clean_run.items() if k not in
                (f"{NAMES[2]}.nii.gz", f"{NAMES[3]}.nii.gz")}
    _assert_same(_outputs(out), expected)
    assert _leftovers(out) == []


def test_batch_usage_errors_exit_2(tiny_model, batch_data, tmp_path, capsys):
    images, ann = batch_data
    single = images / "imagesTr" / f"{NAMES[0]}_0000.nii.gz"
    cases = [
        (_argv(tiny_model, images, ann, tmp_path / "o", "--slice", "3"), "--slice applies"),
        (_argv(tiny_model, images, ann / f"{NAMES[0]}.nii.gz", tmp_path / "o"),
         "is a file; batch runs need a folder"),
        (_argv(tiny_model, images, ann, ann), "is also the annotation folder"),
        (_argv(tiny_model, single, ann / f"{NAMES[0]}.nii.gz", tmp_path / "o.nii.gz",
               "--continue"), "need a batch run"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sparseseg: error:") and message in err[0]
    assert sorted(p.name for p in ann.iterdir()) == [f"{n}.nii.gz" for n in NAMES]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.nii.gz").exists()


def test_kill_9_then_continue_gives_the_clean_outputs(tiny_model, batch_data, clean_run,
                                                      tmp_path):
    # Three copies of each case under other names: a longer batch, same expected outputs.
    images, ann = batch_data
    (tmp_path / "data" / "imagesTr").mkdir(parents=True)
    (tmp_path / "ann").mkdir()
    expected = {}
    for name in NAMES:
        for copy in range(3):
            shutil.copyfile(images / "imagesTr" / f"{name}_0000.nii.gz",
                            tmp_path / "data" / "imagesTr" / f"{name}_{copy}_0000.nii.gz")
            shutil.copyfile(ann / f"{name}.nii.gz", tmp_path / "ann" / f"{name}_{copy}.nii.gz")
            expected[f"{name}_{copy}.nii.gz"] = clean_run[f"{name}.nii.gz"]
    out = tmp_path / "out"
    argv = _argv(tiny_model, tmp_path / "data", tmp_path / "ann", out)
    proc = subprocess.Popen([sys.executable, "-m", "sparseseg", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    # Kill it while it holds a case and has written at least one: mid-batch, mid-case. The
    # worker is stopped (SIGSTOP) before the check that decides the kill, so it cannot
    # finish the case and drop its lock between the check and the kill.

    def mid_case() -> bool:
        names = [p.name for p in out.iterdir()] if out.is_dir() else []
        return any(n.endswith(".lock") for n in names) and any(
            n.endswith(".nii.gz") and not n.startswith(".") for n in names)

    while time.monotonic() < deadline and proc.poll() is None:
        if mid_case():
            os.kill(proc.pid, signal.SIGSTOP)
            if mid_case():
                os.kill(proc.pid, signal.SIGKILL)
                break
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.002)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    proc.stderr.close()
    interrupted = _outputs(out)
    assert 1 <= len(interrupted) < len(expected)
    assert list(out.glob("*.lock")), "the killed worker left its lock"
    _assert_same(interrupted, {k: expected[k] for k in interrupted})  # nothing half-written

    assert main([*argv, "--continue"]) == 0
    _assert_same(_outputs(out), expected)
    assert _leftovers(out) == []
