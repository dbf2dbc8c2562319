import csv
import json
import logging
import math

import numpy as np
import pytest
import torch

from png_checks import check_png
from sparseseg.errors import InputError, SparsesegError
from sparseseg.io import read_label, read_volume, write_volume
from sparseseg.ltuda import DatasetSpec, predict, train
from sparseseg.ltuda.curves import _COLOURS as CURVE_COLOURS
from sparseseg.ltuda.model import CLASSIFIERS, LTUDAModel


@pytest.mark.parametrize("method", ["partial", "ltuda"])
def test_train_then_predict(tmp_path, phantom_sets, method):
    liver_set, other_set = phantom_sets
    specs = [DatasetSpec(liver_set, {"liver": [1]}),
             DatasetSpec(other_set, {"spleen": [2], "kidney": [3]})]
    model = train(output=tmp_path / "model", datasets=specs, method=method, epochs=2, size=32,
                  base_channels=8, progress=False, val_fraction=0.34)
    organs = ["liver", "spleen", "kidney"]
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "ltuda" and config["organs"] == organs
    assert config["method"] == method and config["size"] == 32 and config["base_channels"] == 8
    assert config["classifier"] in CLASSIFIERS
    assert config["components"] == dict.fromkeys(organs, 1)
    assert config["datasets"] == [{"path": str(liver_set), "organs": {"liver": [1]}},
                                  {"path": str(other_set), "organs": {"spleen": [2],
                                                                      "kidney": [3]}}]
    training = config["training"]
    assert training["epochs"] == 2 and training["val_fraction"] == 0.34
    assert len(training["val_cases"]) == 2  # one of the 3 cases of each dataset

    # The saved model reloads as the config describes it and scores every class.
    net = LTUDAModel.load(model)
    assert net.n_organs == 3 and net.base_channels == 8 and net.config == config
    with torch.no_grad():
        scores = net.class_scores(torch.randn(2, 1, 32, 32), config["classifier"])
    assert scores.shape == (2, 4, 32, 32) and torch.isfinite(scores).all()

    # One log row per epoch with finite, positive losses and a decaying learning rate.
    rows = list(csv.DictReader((model / "log.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_dice_liver" in rows[0]
    for row in rows:
        losses = [float(v) for k, v in row.items() if k.startswith("loss_") and v]
        assert "loss_total" in row and losses, row
        assert all(math.isfinite(v) and v > 0 for v in losses), row
        dices = [float(row[f"val_dice_{o}"]) for o in organs]
        assert all(0.0 <= d <= 1.0 for d in dices), row
        # The epoch's score is the organs' mean, that of the classifier it chose.
        assert float(row["val_dice_mean"]) == pytest.approx(np.mean(dices))
        assert float(row["val_dice_mean"]) == pytest.approx(
            float(row[f"val_mean_{row['classifier']}"]))
    assert 0 < float(rows[1]["lr"]) < float(rows[0]["lr"]) <= 1e-3  # poly decay from lr
    assert 0 < float(rows[0]["elapsed_s"]) <= float(rows[1]["elapsed_s"])
    # The curves: losses and validation Dice, a line per series (each its own colour).
    check_png(model / "curves.png", min_size=(400, 300), max_size=(2000, 1500),
              colours=CURVE_COLOURS[:3])
    # The saved epoch is the first with the best mean validation Dice, with its classifier.
    means = [float(r["val_dice_mean"]) for r in rows]
    best = rows[means.index(max(means))]
    assert config["best_epoch"] == int(best["epoch"])
    assert config["val_dice"] == {o: pytest.approx(float(best[f"val_dice_{o}"]))
                                  for o in ("liver", "spleen", "kidney")}
    if method == "ltuda":
        assert rows[-1]["stage"] == "2" and float(rows[-1]["loss_proto"]) > 0
        assert best["classifier"] in ("linear", "labeled", "unlabeled", "teacher")
    else:  # stage 1 only and no mean teacher
        assert best["classifier"] == config["classifier"] == "linear"
        assert config["weights"] == "student"

    image = liver_set / "imagesTr" / "phantom_000_0000.nii.gz"
    out = predict(model=model, inputs=image, output=tmp_path / "seg.nii.gz", progress=False)
    assert out == [tmp_path / "seg.nii.gz"]
    seg, ref = read_label(out[0]), read_volume(image)
    assert seg.same_geometry(ref)
    assert set(np.unique(seg.array)) <= {0, 1, 2, 3}

    many = predict(model=model, inputs=other_set, output=tmp_path / "segs", progress=False)
    assert sorted(p.name for p in many) == [f"phantom_00{i}.nii.gz" for i in range(3)]


def test_max_time_stops_and_saves(tmp_path, phantom_sets, monkeypatch):
    """With a clock at 5 s a batch and 5 steps an epoch, a 1-minute budget ends the run after
    its 12th step, in epoch 3, which is still validated and logged."""
    from sparseseg.ltuda import trainer as trainer_module
    from sparseseg.ltuda.data import SliceSampler
    from sparseseg.runstate import RunClock

    clock = {"seconds": 0.0}
    batch = SliceSampler.batch

    def timed_batch(self):
        clock["seconds"] += 5.0
        return batch(self)

    steps = []
    fit = trainer_module.Trainer.fit
    monkeypatch.setattr(SliceSampler, "batch", timed_batch)
    monkeypatch.setattr(SliceSampler, "__len__", lambda self: 5)
    monkeypatch.setattr(RunClock, "local", lambda self: self.offset + clock["seconds"])
    monkeypatch.setattr(trainer_module.Trainer, "fit",
                        lambda self, callback=None, **kw: fit(self, steps.append, **kw))
    full = DatasetSpec(phantom_sets[0], {"liver": [1], "spleen": [2], "kidney": [3],
                                         "pancreas": [4]})
    model = train(output=tmp_path / "m", datasets=[full], method="partial", epochs=1000,
                  max_time=1.0, size=16, base_channels=4, progress=False)
    assert [(s.epoch, s.epoch_step) for s in steps[-3:]] == [(2, 5), (3, 1), (3, 2)]
    assert len(steps) == 12 and steps[-1].elapsed == 60.0
    rows = list(csv.DictReader((model / "log.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["elapsed_s"]) for r in rows] == [25.0, 50.0, 60.0]
    config = json.loads((model / "config.json").read_text())
    means = [float(r["val_dice_mean"]) for r in rows]
    assert config["training"]["max_time_min"] == 1.0
    assert config["best_epoch"] == means.index(max(means)) + 1
    assert (model / "model.safetensors").exists()


def test_bad_inputs(tmp_path, phantom_sets, caplog):
    liver_set = phantom_sets[0]
    kw = {"output": tmp_path / "m", "epochs": 1, "size": 16, "base_channels": 4,
          "progress": False}
    with pytest.raises(InputError, match="no such file"):
        train(datasets=[DatasetSpec(tmp_path / "missing", {"liver": [1]})], **kw)
    with pytest.raises(InputError, match="both"):
        train(datasets=[DatasetSpec(liver_set, {"liver": [1], "spleen": [1]})], **kw)
    with pytest.raises(SparsesegError, match="method"):
        train(datasets=[DatasetSpec(liver_set, {"liver": [1]})], method="x", **kw)

    bad = tmp_path / "bad"
    (bad / "imagesTr").mkdir(parents=True)
    (bad / "labelsTr").mkdir()
    image = read_volume(liver_set / "imagesTr" / "phantom_000_0000.nii.gz")
    write_volume(bad / "imagesTr" / "x_0000.nii.gz", image.array, image)
    with pytest.raises(InputError, match="no label"):
        train(datasets=[DatasetSpec(bad, {"liver": [1]})], **kw)
    small = image.array[:, :, :3]
    from sparseseg.io import Volume
    ref = Volume(small, image.spacing, image.origin, image.direction)
    write_volume(bad / "labelsTr" / "x.nii.gz", (small > 0).astype(np.uint8), ref)
    with pytest.raises(InputError, match="differs from label shape"):
        train(datasets=[DatasetSpec(bad, {"liver": [1]})], **kw)

    with caplog.at_level(logging.WARNING):
        train(datasets=[DatasetSpec(liver_set, {"liver": [1], "tumour": [9]})], **kw)
    assert any("never occur" in r.getMessage() and "tumour" in r.getMessage()
               for r in caplog.records)
