"""``sparseseg evaluate`` through the CLI entry point and the real console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sparseseg import __version__
from sparseseg.cli.main import main
from sparseseg.evaluation import evaluate_files
from sparseseg.io.volume import Volume
from sparseseg.io.writer import write_volume
from sparseseg.metrics import METRIC_NAMES


@pytest.fixture
def pair(tmp_path: Path, tiny_phantom, tiny_files) -> tuple[Path, Path]:
    """A perturbed prediction and its reference, as files."""
    _, label = tiny_phantom
    _, truth = tiny_files
    pred = write_volume(tmp_path / "pred.nii.gz", np.roll(label.array, 1, axis=1), label)
    return pred, truth


def run_ok(capsys: pytest.CaptureFixture, *argv: str) -> str:
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def run_bad(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run a failing command: exit 2, one stderr line, no traceback; return that line."""
    code = main(["-q", *argv])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sparseseg: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_table(capsys, pair) -> None:
    pred, truth = pair
    out = run_ok(capsys, "evaluate", "-p", str(pred), "-t", str(truth))
    lines = out.strip().splitlines()
    assert "DICE" in lines[0] and "ASSD" in lines[0] and "MSSD" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [r[1] for r in rows] == ["1", "2", "3", "4"]
    scores = evaluate_files(pred=pred, truth=truth)
    for row in rows:
        assert float(row[2]) == pytest.approx(scores[int(row[1])]["dice"], abs=1e-4)
        assert float(row[4]) == pytest.approx(scores[int(row[1])]["assd"], abs=1e-3)


def test_json_matches_api(capsys, pair) -> None:
    pred, truth = pair
    payload = json.loads(run_ok(capsys, "evaluate", "-p", str(pred), "-t", str(truth), "--json"))
    scores = evaluate_files(pred=pred, truth=truth)
    assert set(payload) == {"1", "2", "3", "4"}
    for label, metrics in payload.items():
        assert set(metrics) == set(METRIC_NAMES)
        for name in METRIC_NAMES:
            assert metrics[name] == pytest.approx(scores[int(label)][name])


def test_labels_option(capsys, pair) -> None:
    pred, truth = pair
    argv = ["evaluate", "-p", str(pred), "-t", str(truth), "--json", "--labels", "1,2"]
    assert set(json.loads(run_ok(capsys, *argv))) == {"1", "2"}


def test_infinite_ravd_is_null_in_json(capsys, tmp_path: Path, tiny_phantom, tiny_files) -> None:
    _, label = tiny_phantom
    _, truth = tiny_files
    extra = label.array.copy()
    extra[0, 0, 0] = 9  # a label the reference does not have
    pred = write_volume(tmp_path / "extra.nii.gz", extra, label)
    argv = ["evaluate", "-p", str(pred), "-t", str(truth), "--json", "--labels", "9"]
    payload = json.loads(run_ok(capsys, *argv))
    assert payload["9"]["dice"] == 0.0 and payload["9"]["ravd"] is None


def test_folder_mode(capsys, tmp_path: Path, tiny_phantom) -> None:
    _, label = tiny_phantom
    preds, truths = tmp_path / "preds", tmp_path / "truths"
    preds.mkdir()
    truths.mkdir()
    for i, name in enumerate(["case_a", "case_b"]):
        write_volume(truths / f"{name}.nii.gz", label.array, label)
        write_volume(preds / f"{name}.nii.gz", np.roll(label.array, i, axis=0), label)
    out = run_ok(capsys, "evaluate", "-p", str(preds), "-t", str(truths))
    rows = [line.split() for line in out.strip().splitlines()[2:]]
    assert [r[0] for r in rows] == ["case_a"] * 4 + ["case_b"] * 4 + ["mean"] * 4
    for label_value in "1234":
        dices = {r[0]: float(r[2]) for r in rows if r[1] == label_value}
        assert dices["case_a"] == 1.0
        assert dices["mean"] == pytest.approx((dices["case_a"] + dices["case_b"]) / 2, abs=1e-4)

    payload = json.loads(run_ok(capsys, "evaluate", "-p", str(preds), "-t", str(truths), "--json"))
    assert set(payload) == {"cases", "mean"}
    assert set(payload["cases"]) == {"case_a", "case_b"}
    assert payload["cases"]["case_a"]["1"]["dice"] == 1.0
    labels_only = run_ok(capsys, "evaluate", "-p", str(preds), "-t", str(truths), "--labels", "2")
    assert {line.split()[1] for line in labels_only.strip().splitlines()[2:]} == {"2"}


def test_missing_file(capsys, pair, tmp_path: Path) -> None:
    _, truth = pair
    missing = tmp_path / "missing.nii.gz"
    line = run_bad(capsys, "evaluate", "-p", str(missing), "-t", str(truth))
    assert str(missing) in line and "no such file" in line


def test_shape_mismatch(capsys, pair, tmp_path: Path, tiny_phantom) -> None:
    _, label = tiny_phantom
    _, truth = pair
    small = Volume(label.array[:, :, :-2], label.spacing, label.origin, label.direction)
    pred = write_volume(tmp_path / "small.nii.gz", small.array, small)
    line = run_bad(capsys, "evaluate", "-p", str(pred), "-t", str(truth))
    assert str(pred) in line and "shape" in line


def test_geometry_mismatch(capsys, pair, tmp_path: Path, tiny_phantom) -> None:
    _, label = tiny_phantom
    _, truth = pair
    moved = Volume(label.array, label.spacing, (5.0, 0.0, 0.0), label.direction)
    pred = write_volume(tmp_path / "moved.nii.gz", moved.array, moved)
    line = run_bad(capsys, "evaluate", "-p", str(pred), "-t", str(truth))
    assert str(pred) in line and "geometry" in line


def test_non_integer_labels(capsys, pair, tmp_path: Path) -> None:
    _, truth = pair
    ref = nib.load(truth)
    soft = tmp_path / "soft.nii.gz"
    data = np.asarray(ref.dataobj).astype(np.float32) * 0.5
    nib.save(nib.Nifti1Image(data, ref.affine), soft)
    line = run_bad(capsys, "evaluate", "-p", str(soft), "-t", str(truth))
    assert str(soft) in line and "non-integer" in line


def test_corrupt_file(capsys, pair, tmp_path: Path) -> None:
    _, truth = pair
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(truth.read_bytes()[:300])
    line = run_bad(capsys, "evaluate", "-p", str(bad), "-t", str(truth))
    assert str(bad) in line


def test_bad_labels_argument(capsys, pair) -> None:
    pred, truth = pair
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "-p", str(pred), "-t", str(truth), "--labels", "liver"])
    assert exc.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


def _console_script() -> list[str]:
    exe = shutil.which("sparseseg")
    if exe is None:
        candidate = Path(sys.executable).with_name("sparseseg")
        exe = str(candidate) if candidate.exists() else None
    if exe is None:
        pytest.skip("the sparseseg console script is not installed (pip install -e .)")
    return [exe]


def test_console_script(pair) -> None:
    pred, truth = pair
    exe = _console_script()
    version = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0
    assert version.stdout.strip() == f"sparseseg {__version__}"
    result = subprocess.run(
        [*exe, "evaluate", "-p", str(pred), "-t", str(truth), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["1"]["dice"] == pytest.approx(evaluate_files(pred=pred, truth=truth)[1]["dice"])
    bad = subprocess.run(
        [*exe, "evaluate", "-p", str(pred.with_name("nope.nii.gz")), "-t", str(truth)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"sparseseg: error: {pred.with_name('nope.nii.gz')}: no such file or folder"
    ]
