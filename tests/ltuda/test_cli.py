import json

import pytest

from sparseseg.cli.main import main


def test_malformed_organ_returns_2(tmp_path, capsys, phantom_sets):
    code = main(["ltuda", "train", "-q", "-o", str(tmp_path / "m"),
                 "--dataset", str(phantom_sets[0]), "liver:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ORGAN=VALUE" in err and str(phantom_sets[0]) in err and err.count("\n") == 1


def test_missing_model_returns_2(tmp_path, capsys, phantom_sets):
    code = main(["ltuda", "predict", "-q", "-m", str(tmp_path / "none"),
                 "-i", str(phantom_sets[0]), "-o", str(tmp_path / "out")])
    assert code == 2


def test_train_cli_runs(tmp_path, phantom_sets):
    pytest.importorskip("torch")
    code = main(["ltuda", "train", "-q", "-o", str(tmp_path / "m"),
                 "--dataset", str(phantom_sets[0]), "liver=1",
                 "--dataset", str(phantom_sets[1]), "spleen=2", "kidney=3",
                 "--method", "cda", "--epochs", "1", "--size", "16", "--base-channels", "4",
                 "--strong-views", "1", "--proto-pixels", "64"])
    assert code == 0
    training = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert training["strong_views"] == 1 and training["proto_pixels"] == 64
    assert main(["ltuda", "predict", "-q", "-m", str(tmp_path / "m"), "-i",
                 str(phantom_sets[1]), "-o", str(tmp_path / "p")]) == 0
    assert len(list((tmp_path / "p").glob("*.nii.gz"))) == 3
