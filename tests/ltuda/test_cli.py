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
    err = capsys.readouterr().err
    assert err == f"sparseseg: error: {tmp_path / 'none'}: model folder does not exist\n"
    assert not (tmp_path / "out").exists()


def test_train_cli_runs(tmp_path, phantom_sets, monkeypatch):
    pytest.importorskip("torch")
    from sparseseg.ltuda import teacher, trainer

    decays = []

    def recording_decay(step, ema):
        decays.append(ema)
        return teacher.ema_decay(step, ema)

    monkeypatch.setattr(trainer, "ema_decay", recording_decay)
    code = main(["ltuda", "train", "-q", "-o", str(tmp_path / "m"),
                 "--dataset", str(phantom_sets[0]), "liver=1",
                 "--dataset", str(phantom_sets[1]), "spleen=2", "kidney=3",
                 "--method", "cda", "--epochs", "1", "--size", "16", "--base-channels", "4",
                 "--strong-views", "1", "--proto-pixels", "64", "--ema", "0.99",
                 "--no-tone-augmentation", "--warmup-fraction", "0.5", "--stage1-fraction",
                 "0.8", "--no-weak-view-loss", "--pseudo-confidence", "0.9", "--teacher-flip",
                 "--exclusion"])
    assert code == 0
    training = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert training["strong_views"] == 1 and training["proto_pixels"] == 64
    assert training["warmup_fraction"] == 0.5 and training["stage1_fraction"] == 0.8
    assert training["weak_view_loss"] is False and training["pseudo_confidence"] == 0.9
    assert training["teacher_flip"] is True and training["exclusion"] is True
    assert training["ema"] == 0.99 and training["tone_augmentation"] is False
    assert decays and set(decays) == {0.99}  # the teacher is updated with the decay asked for
    assert main(["ltuda", "predict", "-q", "-m", str(tmp_path / "m"), "-i",
                 str(phantom_sets[1]), "-o", str(tmp_path / "p")]) == 0
    assert len(list((tmp_path / "p").glob("*.nii.gz"))) == 3


@pytest.mark.parametrize("ema", ["0", "1", "1.5"])
def test_ema_outside_open_unit_interval_returns_2(tmp_path, capsys, phantom_sets, ema):
    code = main(["ltuda", "train", "-q", "-o", str(tmp_path / "m"),
                 "--dataset", str(phantom_sets[0]), "liver=1", "--ema", ema])
    assert code == 2
    err = capsys.readouterr().err
    assert "ema must be in (0, 1)" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


def test_bad_val_group_returns_2(tmp_path, capsys, phantom_sets):
    code = main(["ltuda", "train", "-q", "-o", str(tmp_path / "m"),
                 "--dataset", str(phantom_sets[0]), "liver=1", "--val-group", "patient("])
    assert code == 2
    err = capsys.readouterr().err
    assert "val_group 'patient('" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--warmup-fraction", "1", "warmup_fraction must be in [0, 1)"),
    ("--stage1-fraction", "0", "stage1_fraction must be in (0, 1]"),
    ("--pseudo-confidence", "0.3", "pseudo_confidence must be 0 or in (0.5, 1)"),
])
def test_bad_schedule_option_returns_2(tmp_path, capsys, phantom_sets, option, value, message):
    code = main(["ltuda", "train", "-q", "-o", str(tmp_path / "m"),
                 "--dataset", str(phantom_sets[0]), "liver=1", option, value])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
