"""Smoke tests of the benchmark scripts: each runs end to end on a tiny budget.

The numbers are meaningless at this size; what is checked is that every script still runs
from the repository root as documented (``python -m benchmarks.NAME``) and writes its table
and picture. Accuracy and speed live in the scripts' real runs (docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparseseg_test_utils import REAL_DATA, REPO_ROOT

pytest.importorskip("torch")


def run_benchmark(name: str, *args: str, timeout: float = 300) -> str:
    """Run ``python -m benchmarks.NAME ARGS`` from the repository root; return its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def needs(folder: str) -> Path:
    path = REAL_DATA / folder
    if not (path / "imagesTr").is_dir():
        pytest.skip(f"real dataset {path} is absent")
    return path


def test_oneseg_ablation_runs_variants_in_parallel(tmp_path):
    data = needs("LeftAtrium")
    out = run_benchmark("oneseg_ablation", "--data", str(data), "--train", "2", "--limit", "1",
                        "--epochs", "1", "--pairs-per-epoch", "16", "--size", "32",
                        "--variants", "full,no_cycle", "--jobs", "2", "--out", str(tmp_path))
    rows = read_rows(tmp_path / "oneseg_ablation.csv")
    assert sorted({(r["variant"], r["start"]) for r in rows}) == [
        ("full", "largest"), ("full", "screened"),
        ("no_cycle", "largest"), ("no_cycle", "screened")]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert (tmp_path / "oneseg_ablation.png").stat().st_size > 0
    config = (tmp_path / "oneseg_ablation_models" / "no_cycle" / "config.json").read_text()
    assert '"cycle": false' in config
    assert "no_cycle" in out


def test_ltuda_cardiac_table(tmp_path):
    data = needs("Cardiac")
    out = run_benchmark("ltuda_cardiac", "--data", str(data), "--minutes", "0.05",
                        "--methods", "partial,cda", "--test-patients", "1", "--size", "32",
                        "--base-channels", "4", "--strong-views", "1", "--ema", "0.99",
                        "--jobs", "2", "--out", str(tmp_path), "--work", str(tmp_path / "w"))
    rows = read_rows(tmp_path / "ltuda_cardiac.csv")
    config = json.loads((tmp_path / "w" / "model_cda" / "config.json").read_text())
    assert config["training"]["ema"] == 0.99
    assert [r["run"] for r in rows] == ["partial", "cda"]
    for row in rows:
        for organ in ("right_ventricle", "myocardium", "left_ventricle", "mean"):
            assert 0.0 <= float(row[organ]) <= 1.0
    assert (tmp_path / "ltuda_cardiac.png").stat().st_size > 0
    assert "partial" in out and "cda" in out


def test_oneseg_abdomen_per_organ(tmp_path):
    data = needs("AbdomenTS")
    run_benchmark("oneseg_abdomen", "--data", str(data), "--max-time", "0", "--epochs", "1",
                  "--pairs-per-epoch", "8", "--size", "32", "--organs", "5",
                  "--methods", "oneseg,copy", "--cases", "ts_mr", "--no-anchor",
                  "--out", str(tmp_path))
    rows = read_rows(tmp_path / "oneseg_abdomen.csv")
    assert {r["organ"] for r in rows} == {"liver"}
    assert {r["method"] for r in rows} == {"oneseg", "copy"}
    assert {r["start"] for r in rows} == {"screened", "volume_middle", "largest", "middle"}
    assert (tmp_path / "oneseg_abdomen_ts_mr.png").stat().st_size > 0


def test_ltuda_phantom_confusion_column(tmp_path):
    csv_path = tmp_path / "ltuda_phantom.csv"
    out = run_benchmark("ltuda_phantom", "--minutes", "0.05", "--methods", "partial,full",
                        "--shape", "32", "32", "6", "--size", "32", "--base-channels", "4",
                        "--test-cases", "1", "--train-cases", "2", "--jobs", "2",
                        "--csv", str(csv_path))
    rows = read_rows(csv_path)
    assert [r["run"] for r in rows] == ["partial", "full"]
    for row in rows:
        for key in ("liver", "spleen", "kidney", "pancreas", "mean", "confusion"):
            assert 0.0 <= float(row[key]) <= 1.0
    assert "confusion" in out


def test_training_options_switch_cycle_and_scheduled_sampling():
    import argparse

    from benchmarks._oneseg_common import add_training_options, train_configs

    parser = argparse.ArgumentParser()
    add_training_options(parser, max_time=15.0)
    _, default = train_configs(parser.parse_args([]))
    assert default.cycle and default.scheduled_sampling and default.max_time == 15.0
    args = parser.parse_args(["--no-cycle", "--no-scheduled-sampling", "--max-time", "0"])
    _, ablated = train_configs(args)
    assert not ablated.cycle and not ablated.scheduled_sampling and ablated.max_time is None
    # An ablation variant overrides the command line.
    network, variant = train_configs(args, cycle=True, bottleneck="intensity")
    assert variant.cycle and network.bottleneck == "intensity"


def test_oneseg_leftatrium_table_and_figures(tmp_path):
    data = needs("LeftAtrium")
    out = run_benchmark("oneseg_leftatrium", "--data", str(data), "--train", "2", "--limit", "1",
                        "--max-time", "0", "--epochs", "1", "--pairs-per-epoch", "16",
                        "--size", "32", "--methods", "oneseg,copy", "--starts",
                        "largest,screened", "--no-anchor", "--out", str(tmp_path))
    rows = read_rows(tmp_path / "oneseg_leftatrium.csv")
    assert sorted({(r["start"], r["method"]) for r in rows}) == [
        ("largest", "copy"), ("largest", "oneseg"), ("screened", "copy"), ("screened", "oneseg")]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    for name in ("error_vs_distance.csv", "error_vs_distance.png", "oneseg_leftatrium_case.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "largest" in out and "oneseg" in out


def test_oneseg_cost_times_propagation_and_training_in_each_precision(tmp_path):
    from sparseseg import precision

    out = run_benchmark("oneseg_cost", "--sizes", "32x32x8", "--methods", "oneseg,copy",
                        "--train-steps", "1", "--train-size", "32",
                        "--train-precisions", "fp32,bf16", "--out", str(tmp_path))
    rows = read_rows(tmp_path / "oneseg_cost.csv")
    assert [(r["size"], r["method"]) for r in rows] == [("32x32x8", "oneseg"),
                                                          ("32x32x8", "copy")]
    assert all(float(r["seconds"]) > 0 and float(r["peak_mb"]) > 0 for r in rows)
    assert (tmp_path / "oneseg_cost.png").stat().st_size > 0
    timed = read_rows(tmp_path / "training_throughput.csv")
    precisions = ["fp32", "bf16"] if precision._cpu_bf16() else ["fp32"]
    methods = ["oneseg", "partial", "ltuda stage 1", "ltuda stage 2"]
    assert [(r["precision"], r["method"]) for r in timed] == [
        (p, m) for p in precisions for m in methods]
    assert all(float(r["steps_per_s"]) > 0 for r in timed)
    assert "training throughput" in out


def test_ltuda_cardiac_patient_folds_cover_every_patient_once():
    from benchmarks.ltuda_cardiac import patient_folds

    patients = [f"p{i:02d}" for i in range(20)]
    folds = patient_folds(patients, 3)
    tests = [p for test, _ in folds for p in test]
    assert sorted(tests) == patients  # disjoint and complete
    assert [len(test) for test, _ in folds] == [7, 7, 6]
    for test, train in folds:
        assert sorted(test + train) == patients and not set(test) & set(train)


def test_ltuda_cardiac_fold_summary_pairs_each_fold_with_partial():
    from benchmarks.ltuda_cardiac import fold_summary

    rows = [{"fold": f, "run": run, "mean": m} for f, ms in enumerate([(0.7, 0.8), (0.6, 0.62)])
            for run, m in zip(("partial", "ltuda"), ms, strict=True)]
    lines = fold_summary(rows, ["partial", "ltuda"]).splitlines()
    assert lines[1].startswith("partial | 0.6500 |")
    assert lines[2].startswith("ltuda | 0.7100 |")
    assert "| +0.0600, 0.0566, +0.1000 +0.0200" in lines[2]
    single = fold_summary(rows[:2], ["partial", "ltuda"]).splitlines()
    assert single[1] == "partial | 0.7000 | - | 0.7000"
    assert single[2] == "ltuda | 0.8000 | - | 0.8000 | +0.1000, -, +0.1000"


def test_ltuda_cardiac_folds(tmp_path):
    data = needs("Cardiac")
    out = run_benchmark("ltuda_cardiac", "--data", str(data), "--minutes", "0.02",
                        "--methods", "partial,full", "--folds", "2", "--only-folds", "1",
                        "--size", "32", "--base-channels", "4", "--jobs", "2",
                        "--out", str(tmp_path))
    rows = read_rows(tmp_path / "ltuda_cardiac_folds.csv")
    assert [(r["fold"], r["run"]) for r in rows] == [("1", "partial"), ("1", "full")]
    assert (tmp_path / "ltuda_cardiac_fold1.csv").is_file()
    assert not (tmp_path / "ltuda_cardiac_fold0.csv").exists()
    assert "minus partial" in out and out.count("test patients 10") == 1


def test_ltuda_cardiac_refuses_folds_out_of_range(tmp_path):
    data = needs("Cardiac")
    done = subprocess.run([sys.executable, "-m", "benchmarks.ltuda_cardiac", "--data", str(data),
                           "--folds", "4", "--only-folds", "4", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--only-folds takes folds 0..3" in done.stderr
    assert not list(tmp_path.iterdir())


def test_ltuda_run_groups_share_one_pool_and_keep_each_groups_table(tmp_path, monkeypatch):
    import benchmarks._ltuda_common as common

    trained = []

    def fake(name, specs, method, test, organ_values, work, **kwargs):
        trained.append((work.name, name))
        return {"run": name, "method": method, "mean": float(len(trained))}

    monkeypatch.setattr(common, "train_and_evaluate", fake)
    groups = [common.RunGroup({"full": ([], "partial")}, [], tmp_path / f"fold{k}",
                              tmp_path / f"fold{k}.csv") for k in (0, 2)]
    groups.append(common.RunGroup({"partial": ([], "partial"), "ltuda": ([], "ltuda")}, [],
                                  tmp_path / "fold3", tmp_path / "fold3.csv"))
    tables = common.run_groups(groups, {"organ": 1}, jobs=1, minutes=0.1, size=32,
                               base_channels=4, seed=0)
    assert trained == [("fold0", "full"), ("fold2", "full"), ("fold3", "partial"),
                       ("fold3", "ltuda")]
    assert [[r["run"] for r in t] for t in tables] == [["full"], ["full"], ["partial", "ltuda"]]
    assert [r["mean"] for r in tables[2]] == [3.0, 4.0]
    assert [r["run"] for r in read_rows(tmp_path / "fold3.csv")] == ["partial", "ltuda"]
    assert read_rows(tmp_path / "fold2.csv")[0]["mean"] == "2.0"


def test_joined_cardiac_propagates_one_slice_per_volume_then_trains(tmp_path):
    data = needs("Cardiac")
    out = run_benchmark("joined_cardiac", "--data", str(data), "--oneseg-minutes", "0.05",
                        "--oneseg-size", "64", "--minutes", "0.02", "--size", "32",
                        "--base-channels", "4", "--train-patients", "3", "--test-patients", "2",
                        "--labels", "propagated", "--out", str(tmp_path))
    prop = read_rows(tmp_path / "joined_cardiac_propagation.csv")
    # 3 training patients, one per structure, 2 frames each: 6 volumes, one slice each
    assert sorted({r["structure"] for r in prop}) == ["left_ventricle", "myocardium",
                                                      "right_ventricle"]
    assert len(prop) == 6
    assert all(0 <= float(r["dice"]) <= 1 and int(r["truth_slices"]) >= 1 for r in prop)
    runs = read_rows(tmp_path / "joined_cardiac.csv")
    assert [r["run"] for r in runs] == ["partial_propagated", "ltuda_propagated"]
    assert "slices annotated" in out and "propagation DICE" in out


def test_annotation_curve_adds_slices_by_each_strategy(tmp_path):
    data = needs("AbdomenTS")
    out = run_benchmark("annotation_curve", "--dataset", "abdomen", "--data", str(data),
                        "--max-time", "0", "--epochs", "1", "--pairs-per-epoch", "8",
                        "--size", "32", "--labels", "5", "--limit", "1", "--slices", "3",
                        "--methods", "oneseg,interpolation", "--out", str(tmp_path))
    rows = read_rows(tmp_path / "annotation_curve_abdomen.csv")
    assert "interpolation" in out and "2 slices" in out
    for strategy in ("suggest", "uniform", "random"):
        oneseg_rows = [r for r in rows if (r["method"], r["strategy"]) == ("oneseg", strategy)]
        assert [int(r["n"]) for r in oneseg_rows] == [1, 2, 3]
        # Nested: each step adds one slice to the previous ones (uniform re-spaces them).
        sizes = [len(r["slices"].split()) for r in oneseg_rows]
        assert sizes == [1, 2, 3]
        interp = [r for r in rows if (r["method"], r["strategy"]) == ("interpolation", strategy)]
        assert [int(r["n"]) for r in interp] == [2, 3]  # interpolation needs 2 slices
        # Interpolation is scored on the same slices as OneSeg.
        assert [r["slices"] for r in interp] == [r["slices"] for r in oneseg_rows[1:]]
    suggested = [r["slices"] for r in rows if r["strategy"] == "suggest"]
    assert suggested[0].split()[0] in suggested[2].split()
    assert (tmp_path / "annotation_curve_abdomen.png").stat().st_size > 0


def test_uniform_slices_are_centres_of_equal_parts():
    from benchmarks.annotation_curve import uniform_slices

    assert uniform_slices(10, 19, 1) == [15]
    assert uniform_slices(10, 19, 2) == [12, 17]
    assert uniform_slices(0, 2, 5) == [0, 1, 2]  # fewer slices than asked: each once


def test_default_model_benchmark(tmp_path):
    data = needs("LeftAtrium").parent
    out = run_benchmark("default_model", "--data", str(data), "--limit", "1",
                        "--parts", "leftatrium,speed", "--repeats", "1", "--threads", "1",
                        "--out", str(tmp_path))
    rows = read_rows(tmp_path / "default_model.csv")
    atrium = [r for r in rows if r["part"] == "leftatrium"]
    assert [(r["case"], r["variant"]) for r in atrium] == [("la_lh4fvu3t", "default")]
    assert int(atrium[0]["start"]) == 53  # the atrium's middle slice
    assert float(atrium[0]["dice"]) > 0.8  # measured 0.859 with the shipped model
    speed = {r["variant"]: float(r["seconds"]) for r in rows if r["part"] == "speed"}
    assert set(speed) == {"sparseseg --help", "oneseg propagate"}
    assert all(s > 0 for s in speed.values())
    assert "leftatrium" in out and "oneseg propagate" in out
