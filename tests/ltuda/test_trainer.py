import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sparseseg import precision
from sparseseg.ltuda import DatasetSpec, train
from sparseseg.ltuda import trainer as trainer_module
from sparseseg.ltuda.classify import organs_to_classes
from sparseseg.ltuda.data import load_cases
from sparseseg.ltuda.model import LTUDAModel
from sparseseg.ltuda.pseudo import merge_pseudo_labels
from sparseseg.ltuda.trainer import EpochResult, TrainConfig, Trainer, sample_per_class

ORGANS = ["liver", "spleen", "kidney"]


def _specs(phantom_sets):
    liver_set, other_set = phantom_sets
    return [DatasetSpec(liver_set, {"liver": [1]}),
            DatasetSpec(other_set, {"spleen": [2], "kidney": [3]})]


def _trainer(phantom_sets, **settings) -> Trainer:
    """A seeded trainer of a small model on the phantom datasets (no validation cases)."""
    torch.manual_seed(0)
    cases = load_cases(_specs(phantom_sets), ORGANS, 32)
    model = LTUDAModel(n_organs=3, base_channels=8, depth=2)
    return Trainer(model, cases, [], TrainConfig(seed=0, **settings), torch.device("cpu"))


def test_stage2_prototypes_start_from_class_features(phantom_sets):
    trainer = _trainer(phantom_sets, method="ltuda")
    model = trainer.model
    for _ in range(3):
        trainer.train_step()
    random_protos = model.proto_unlabeled.prototypes.clone()
    trainer.start_stage2()
    assert trainer.stage == 2
    assert len(trainer.optimizer.param_groups) == 2  # projection head joined, U-Net state kept
    assert not torch.equal(model.proto_unlabeled.prototypes, random_protos)

    # Embed fresh pixels: each class's prototypes lie on that class's pixels (random unit
    # vectors in 64-d would have cosine about 0 with them).
    x, y, m = trainer.sampler.batch()
    with torch.no_grad():
        pseudo = merge_pseudo_labels(torch.sigmoid(trainer.teacher(x)[0]), y, m)
        emb = model.projection(model(x)[1])
    target = organs_to_classes(pseudo).flatten()
    flat = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
    assert len(target.unique()) >= 3
    for clf in (model.proto_labeled, model.proto_unlabeled):
        for c in target.unique().tolist():
            own = (flat[target == c] @ clf.prototypes[c].t()).amax(dim=1).mean()
            rand = (flat[target == c] @ random_protos[c].t()).amax(dim=1).mean()
            assert own > 0.6 and own > rand + 0.4, (c, own, rand)


def test_best_classifier_is_saved_and_recorded(tmp_path, phantom_sets, monkeypatch):
    fake = {"linear": 0.5, "labeled": 0.9, "unlabeled": 0.7}

    def validate_all(model, cases, classifiers, device, batch=16):
        return {c: np.full(model.n_organs, fake[c]) for c in classifiers}

    monkeypatch.setattr(trainer_module, "validate_all", validate_all)
    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="ltuda",
                  epochs=2, size=32, base_channels=8, progress=False, val_fraction=0.34)
    config = json.loads((model / "config.json").read_text())
    assert config["classifier"] == "labeled" and config["best_epoch"] == 2
    assert config["val_dice"]["liver"] == 0.9
    rows = list(csv.DictReader((model / "log.csv").read_text().splitlines()))
    assert [r["classifier"] for r in rows] == ["linear", "labeled"]
    assert abs(float(rows[1]["val_mean_unlabeled"]) - 0.7) < 1e-9
    assert abs(float(rows[1]["val_mean_linear"]) - 0.5) < 1e-9


def test_teacher_averages_batchnorm_statistics_not_copies(phantom_sets):
    # A teacher with averaged weights but the student's batch-norm statistics predicts
    # garbage; its statistics must be averaged like its weights.
    trainer = _trainer(phantom_sets, method="cda")
    model = trainer.model
    for _ in range(3):
        trainer.train_step()
    student = dict(model.unet.named_buffers())
    stats = {k: v for k, v in trainer.teacher.named_buffers() if k.endswith("running_mean")}
    assert stats
    for key, value in stats.items():
        assert not torch.allclose(value, student[key]), key


def test_warmup_trains_like_partial_then_uses_the_teacher(phantom_sets):
    cases = load_cases(_specs(phantom_sets), ORGANS, 32)
    model = LTUDAModel(n_organs=3, base_channels=8, depth=2)
    settings = TrainConfig(method="ltuda", seed=0, warmup_fraction=0.6, stage1_fraction=0.5)
    trainer = Trainer(model, cases, [], settings, torch.device("cpu"))
    calls = []
    teacher_forward = trainer.teacher.forward
    trainer.teacher.forward = lambda x: calls.append(1) or teacher_forward(x)
    trainer.progress = 0.3
    terms = trainer.train_step()
    assert calls == [] and terms["cda"] == 0.0 and trainer.warming_up()
    trainer.progress = 0.7
    terms = trainer.train_step()
    assert calls == [1] and terms["cda"] > 0 and not trainer.warming_up()

    # run(): stage 2 never starts inside the warm-up, even when stage1_fraction is smaller.
    seen = []
    trainer = Trainer(LTUDAModel(n_organs=3, base_channels=8, depth=2), cases, [],
                      TrainConfig(method="ltuda", epochs=4, seed=0, warmup_fraction=0.75,
                                    stage1_fraction=0.25), torch.device("cpu"))
    trainer.fit(on_epoch=lambda result: seen.append(result.stage))
    assert seen == [1, 1, 1, 2]


def test_stage1_fraction_sets_where_stage2_starts(phantom_sets):
    # Stage 2 costs about 1.6 stage-1 steps (benchmarks/ltuda_diagnose.py); how much of a
    # budget it gets is a setting (0.8 was tried on Cardiac, 2026-12-05; the default is 0.5).
    cases = load_cases(_specs(phantom_sets), ORGANS, 32)

    def stages(**settings) -> list[int]:
        seen = []
        trainer = Trainer(LTUDAModel(n_organs=3, base_channels=8, depth=2), cases, [],
                          TrainConfig(method="ltuda", epochs=5, seed=0, **settings),
                          torch.device("cpu"))
        trainer.fit(on_epoch=lambda result: seen.append(result.stage))
        return seen

    assert stages() == [1, 1, 2, 2, 2]  # from the middle of epoch 3
    assert stages(stage1_fraction=0.8) == [1, 1, 1, 1, 2]
    assert stages(stage1_fraction=1.0) == [1, 1, 1, 1, 1]  # stage 1 only, like cda


def test_train_passes_stage1_fraction_and_records_it(tmp_path, phantom_sets):
    import inspect

    from sparseseg.errors import SparsesegError

    assert inspect.signature(train).parameters["stage1_fraction"].default == \
        TrainConfig().stage1_fraction == 0.5
    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="ltuda",
                  epochs=2, size=32, base_channels=8, progress=False, stage1_fraction=1.0)
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["stage1_fraction"] == 1.0
    rows = list(csv.DictReader((model / "log.csv").read_text().splitlines()))
    assert [r["stage"] for r in rows] == ["1", "1"]
    for bad in (0.0, 1.5):
        with pytest.raises(SparsesegError, match="stage1_fraction"):
            train(output=tmp_path / "bad", datasets=_specs(phantom_sets), method="ltuda",
                  epochs=1, size=32, base_channels=8, progress=False, stage1_fraction=bad)


def test_train_passes_warmup_fraction_and_records_it(tmp_path, phantom_sets):
    import inspect

    from sparseseg.errors import SparsesegError

    assert inspect.signature(train).parameters["warmup_fraction"].default == \
        TrainConfig().warmup_fraction == 0.3
    seen = []
    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="cda",
                  epochs=4, size=32, base_channels=8, progress=False, warmup_fraction=0.6,
                  on_epoch=lambda result, trainer: seen.append(trainer.warming_up()))
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["warmup_fraction"] == 0.6
    # the last step of epochs 1-2 (progress < 0.6) is still in the warm-up, of 3-4 not
    assert seen == [True, True, False, False]
    for bad in (-0.1, 1.0):
        with pytest.raises(SparsesegError, match="warmup_fraction"):
            train(output=tmp_path / "bad", datasets=_specs(phantom_sets), method="cda",
                  epochs=1, size=32, base_channels=8, progress=False, warmup_fraction=bad)


def test_pseudo_confidence_masks_the_strong_views_pseudo_labels(phantom_sets, monkeypatch):
    # With pseudo_confidence the strong views' pseudo-label term is supervised only where the
    # teacher is sure; with 0 (the default, the paper) on every pixel.
    assert TrainConfig().pseudo_confidence == 0.0
    masks = []
    original = trainer_module.supervised_loss

    def spy(logits, target, known, **kw):
        masks.append(known.float().clone())
        return original(logits, target, known, **kw)

    monkeypatch.setattr(trainer_module, "supervised_loss", spy)
    for confidence in (0.0, 0.999):
        trainer = _trainer(phantom_sets, method="ltuda", n_strong=1,
                           pseudo_confidence=confidence)
        trainer.progress = 0.4  # stage 1, after the warm-up
        masks.clear()
        trainer.train_step()
        weak, pseudo_term, partial_term = masks  # weak view, then the strong view's two terms
        if confidence == 0:
            assert torch.equal(pseudo_term, torch.ones_like(pseudo_term))
        else:  # an untrained teacher is unsure almost everywhere, but labeled channels count
            assert 0 < pseudo_term.mean() < 0.9
            assert torch.all(pseudo_term >= partial_term.expand_as(pseudo_term))


def test_train_records_pseudo_confidence_and_refuses_bad_values(tmp_path, phantom_sets):
    from sparseseg.errors import SparsesegError

    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="cda",
                  epochs=1, size=32, base_channels=8, progress=False, pseudo_confidence=0.9)
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["pseudo_confidence"] == 0.9
    for bad in (0.5, 1.0, -0.1):
        with pytest.raises(SparsesegError, match="pseudo_confidence"):
            train(output=tmp_path / "bad", datasets=_specs(phantom_sets), method="ltuda",
                  epochs=1, size=32, base_channels=8, progress=False, pseudo_confidence=bad)


def test_teacher_is_saved_when_it_validates_best(tmp_path, phantom_sets, monkeypatch):
    scores = iter([0.2, 0.4, 0.6])
    monkeypatch.setattr(Trainer, "validate_teacher",
                        lambda self: np.full(self.model.n_organs, next(scores)))
    monkeypatch.setattr(trainer_module, "validate_all",
                        lambda model, cases, classifiers, device, batch=16:
                        {c: np.full(model.n_organs, 0.1) for c in classifiers})
    folder = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="cda",
                   epochs=3, size=32, base_channels=8, progress=False, val_fraction=0.34)
    config = json.loads((folder / "config.json").read_text())
    assert config["weights"] == "teacher" and config["classifier"] == "linear"
    assert config["best_epoch"] == 3
    saved = load_file(folder / "model.safetensors")
    run = load_file(folder / "resume.safetensors")  # state at the end of epoch 3
    conv = [k for k in saved if k.startswith("unet.") and k.endswith("weight")]
    assert conv
    for key in conv:
        assert torch.equal(saved[key], run["teacher." + key[5:]]), key
    assert any(not torch.equal(saved[k], run["model." + k]) for k in conv)  # not the student
    rows = list(csv.DictReader((folder / "log.csv").read_text().splitlines()))
    assert [r["classifier"] for r in rows] == ["teacher"] * 3
    assert abs(float(rows[0]["val_mean_teacher"]) - 0.2) < 1e-9


def test_partial_has_no_teacher_to_validate(tmp_path, phantom_sets):
    folder = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="partial",
                   epochs=1, size=32, base_channels=8, progress=False, val_fraction=0.34)
    config = json.loads((folder / "config.json").read_text())
    assert config["weights"] == "student"
    rows = list(csv.DictReader((folder / "log.csv").read_text().splitlines()))
    assert "val_mean_teacher" not in rows[0]


def test_sample_per_class_caps_each_class_reproducibly():
    targets = torch.tensor([0] * 500 + [1] * 7 + [2] * 60 + [3] * 200)[torch.randperm(767)]
    keep = sample_per_class(targets, 50, torch.Generator().manual_seed(1))
    counts = torch.bincount(targets[keep], minlength=4).tolist()
    assert counts == [50, 7, 50, 50]
    assert len(set(keep.tolist())) == keep.numel()
    again = sample_per_class(targets, 50, torch.Generator().manual_seed(1))
    assert torch.equal(keep, again)
    other = sample_per_class(targets, 50, torch.Generator().manual_seed(2))
    assert not torch.equal(keep, other)


def _stage2_trainer(phantom_sets, **settings):
    trainer = _trainer(phantom_sets, method="ltuda", **settings)
    trainer.progress = 0.9
    trainer.start_stage2()
    return trainer


def test_prototype_losses_use_at_most_proto_pixels_per_class(phantom_sets, monkeypatch):
    seen = []
    original = trainer_module.prototype_loss

    def spy(sims, targets, assignment, **kw):
        seen.append(torch.bincount(targets, minlength=4))
        return original(sims, targets, assignment, **kw)

    monkeypatch.setattr(trainer_module, "prototype_loss", spy)
    _stage2_trainer(phantom_sets, proto_pixels=40, n_strong=1).train_step()
    assert len(seen) == 2  # labeled and unlabeled classifiers
    assert all(c.max() <= 40 for c in seen) and seen[0].sum() > 40
    seen.clear()
    _stage2_trainer(phantom_sets, proto_pixels=0, n_strong=1).train_step()
    assert seen[0].sum() == 4 * 32 * 32  # every pixel of the batch


def test_strong_views_set_the_student_passes(phantom_sets):
    for n_strong in (1, 2):
        trainer = _stage2_trainer(phantom_sets, n_strong=n_strong)
        passes: list[int] = []
        trainer.model.unet.register_forward_hook(lambda *_, seen=passes: seen.append(1))
        trainer.train_step()
        assert len(passes) == 1 + n_strong  # weak view + each strong view


def test_without_weak_view_loss_only_the_strong_views_train_after_the_warm_up(phantom_sets):
    assert TrainConfig().weak_view_loss  # the paper's step by default
    for progress, stage2, student_passes in ((0.1, False, 1), (0.4, False, 1), (0.9, True, 1)):
        trainer = (_stage2_trainer(phantom_sets, n_strong=1, weak_view_loss=False) if stage2
                   else _trainer(phantom_sets, method="ltuda", n_strong=1,
                                 weak_view_loss=False))
        trainer.progress = progress
        student: list[int] = []
        teacher: list[int] = []
        trainer.model.unet.register_forward_hook(lambda *_, seen=student: seen.append(1))
        trainer.teacher.register_forward_hook(lambda *_, seen=teacher: seen.append(1))
        before = [p.detach().clone() for p in trainer.model.unet.parameters()]
        terms = trainer.train_step()
        assert len(student) == student_passes
        warm = progress < trainer.config.warmup_fraction
        assert len(teacher) == (0 if warm else 1)
        # in the warm-up the one pass is the weak view's partial loss, after it a strong view
        assert (terms["sup"] > 0) == warm
        assert terms["cda"] > 0 or warm
        assert any(not torch.equal(a, b)
                   for a, b in zip(before, trainer.model.unet.parameters(), strict=True))


def test_teacher_flip_averages_the_teacher_over_the_view_and_its_mirror(phantom_sets,
                                                                       monkeypatch):
    assert not TrainConfig().teacher_flip  # the paper's pseudo-labels by default
    seen: dict[str, torch.Tensor] = {}
    original = trainer_module.merge_pseudo_labels

    def spy(probs, partial, labeled, **kw):
        seen["probs"] = probs.clone()
        return original(probs, partial, labeled, **kw)

    monkeypatch.setattr(trainer_module, "merge_pseudo_labels", spy)
    for flip, passes in ((False, 1), (True, 2)):
        trainer = _trainer(phantom_sets, method="cda", n_strong=1, teacher_flip=flip)
        trainer.progress = 0.9
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []

        def hook(_module, args, out, ins=inputs, outs=outputs):
            ins.append(args[0].detach().clone())
            outs.append((out[0] if isinstance(out, tuple) else out).detach().float())

        trainer.teacher.register_forward_hook(hook)
        trainer.train_step()
        assert len(inputs) == passes
        if flip:
            assert torch.equal(inputs[1], inputs[0].flip(-1))  # the mirrored weak view
            want = 0.5 * (torch.sigmoid(outputs[0]) + torch.sigmoid(outputs[1]).flip(-1))
            assert torch.allclose(seen["probs"].float(), want, atol=1e-2)  # bf16 on some CPUs
        else:
            assert torch.allclose(seen["probs"].float(), torch.sigmoid(outputs[0]), atol=1e-2)


def test_train_holds_out_whole_subjects_with_val_group(tmp_path, phantom_sets):
    # phantom_000 .. phantom_002 in each set; the group "phantom_00" joins all three of a set,
    # so a set cannot be split by subject and keeps everything for training
    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="partial",
                  epochs=1, size=32, base_channels=8, progress=False, val_fraction=0.4,
                  val_group=r"phantom_00")
    training = json.loads((model / "config.json").read_text())["training"]
    assert training["val_group"] == "phantom_00" and training["val_cases"] == []
    model = train(output=tmp_path / "n", datasets=_specs(phantom_sets), method="partial",
                  epochs=1, size=32, base_channels=8, progress=False, val_fraction=0.4,
                  val_group=r"phantom_\d+")
    training = json.loads((model / "config.json").read_text())["training"]
    assert len(training["val_cases"]) == 2  # one of each set's 3 subjects


def test_train_records_weak_view_loss(tmp_path, phantom_sets):
    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="cda",
                  epochs=2, size=32, base_channels=8, progress=False, weak_view_loss=False)
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["weak_view_loss"] is False


def test_bf16_steps_train_float32_weights_in_both_stages(phantom_sets):
    if not precision._cpu_bf16():
        pytest.skip("no bfloat16 on this CPU")
    trainer = _trainer(phantom_sets, method="ltuda", precision="bf16", warmup_fraction=0.0)
    assert trainer.autocast_dtype == torch.bfloat16
    before = [p.detach().clone() for p in trainer.model.unet.parameters()]
    terms = [trainer.train_step() for _ in range(2)]
    trainer.start_stage2()
    terms.append(trainer.train_step())
    assert all(np.isfinite(list(t.values())).all() for t in terms)
    assert {"sup", "cda", "proto", "total"} <= set(terms[-1])
    params = list(trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert any(not torch.equal(a, b)
               for a, b in zip(before, trainer.model.unet.parameters(), strict=True))
    assert trainer.model.proto_unlabeled.prototypes.dtype == torch.float32


def test_weak_view_tone_is_on_by_default_and_switchable(phantom_sets):
    x, y, _ = _trainer(phantom_sets).sampler.batch()
    views = {}
    for tone in (True, False):
        trainer = _trainer(phantom_sets, tone=tone)
        trainer.generator.manual_seed(3)
        views[tone] = trainer.weak_view(x, y)
    # the same warp (drawn first from the same seed), labels alike; only intensities differ
    assert torch.equal(views[True][1], views[False][1])
    assert not torch.allclose(views[True][0], views[False][0])
    assert TrainConfig().tone


def test_train_settings_is_a_deprecated_name_of_train_config():
    with pytest.warns(DeprecationWarning, match="TrainConfig"):
        assert trainer_module.TrainSettings is TrainConfig


def test_train_records_tone_augmentation(tmp_path, phantom_sets):
    out = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="partial",
                epochs=1, size=32, base_channels=4, progress=False, tone_augmentation=False)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["tone_augmentation"] is False


def test_fit_counts_epochs_from_one_and_reports_each_step_and_epoch(phantom_sets):
    cases = load_cases(_specs(phantom_sets), ORGANS, 32)
    model = LTUDAModel(n_organs=3, base_channels=4, depth=2)
    trainer = Trainer(model, cases[1:], cases[:1], TrainConfig(method="partial", epochs=2, seed=0),
                      torch.device("cpu"))
    n = trainer.steps_per_epoch
    steps, epochs = [], []
    trainer.fit(steps.append, on_epoch=epochs.append)
    assert [(r.epoch, r.epoch_step, r.step) for r in steps] == (
        [(1, i, i) for i in range(1, n + 1)] + [(2, i, n + i) for i in range(1, n + 1)])
    assert all(r.total_steps == 2 * n and r.steps_per_epoch == n for r in steps)
    assert set(steps[0].values) == {"sup", "total"}  # partial: no teacher terms
    assert [r.epoch for r in epochs] == [1, 2] and trainer.history == epochs
    for result, own in zip(epochs, (steps[:n], steps[n:]), strict=True):
        total = 0.0
        for r in own:
            total += r.values["total"]
        assert result.losses["total"] == total / n and result.stage == 1
        assert result.classifier == "linear" and set(result.val_by_classifier) == {"linear"}
        # case 0 labels the liver only: the other organs have no validation score
        assert np.isnan(result.val[1:]).all() and 0.0 <= result.val[0] <= 1.0
        assert result.score == result.val[0]
    assert epochs[0].best and trainer.best.epoch == (2 if epochs[1].best else 1)
    assert (trainer.epoch, trainer.epoch_step, trainer.step, trainer.finished) == (3, 0, 2 * n,
                                                                                  True)


def test_epoch_result_json_round_trip():
    result = EpochResult(epoch=3, stage=2, lr=1e-4, losses={"sup": 0.5, "total": 1.5},
                         val=np.array([0.25, np.nan]), classifier="labeled",
                         val_by_classifier={"linear": 0.2, "labeled": -np.inf}, elapsed=12.5,
                         best=True)
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))  # strict JSON
    back = EpochResult.from_json(data)
    assert data["val"] == [0.25, None] and data["val_by_classifier"]["labeled"] is None
    assert back.val_by_classifier == {"linear": 0.2, "labeled": -np.inf}
    np.testing.assert_array_equal(back.val, result.val)
    assert (back.epoch, back.stage, back.lr, back.losses, back.classifier, back.elapsed) == (
        3, 2, 1e-4, {"sup": 0.5, "total": 1.5}, "labeled", 12.5)
    assert not back.best and back.score == 0.25


def test_format_1_record_becomes_history_and_best(phantom_sets):
    """Format 1 kept the model folder's log rows (organ names in the keys) in ``record``."""
    trainer = _trainer(phantom_sets, method="cda")
    row = {"epoch": 1, "stage": 1, "lr": 0.001, "loss_sup": 0.6, "loss_cda": 0.0,
           "loss_total": 0.6, "val_dice_liver": 0.5, "val_dice_spleen": float("nan"),
           "val_dice_kidney": 0.25, "val_dice_mean": 0.375, "val_mean_linear": 0.375,
           "val_mean_teacher": float("nan"), "classifier": "linear", "elapsed_s": 3.0}
    meta = {"epoch": 2, "record": {"history": [row],
                                   "best": {"score": 0.375, "epoch": 1, "classifier": "linear"}}}
    upgraded = trainer.upgrade_meta(dict(meta), 1)
    assert "record" not in upgraded
    assert upgraded["best"] == {"score": 0.375, "epoch": 1, "classifier": "linear"}
    (result,) = [EpochResult.from_json(r) for r in upgraded["history"]]
    np.testing.assert_array_equal(result.val, [0.5, np.nan, 0.25])
    assert result.losses == {"sup": 0.6, "cda": 0.0, "total": 0.6}
    assert result.val_by_classifier == {"linear": 0.375, "teacher": -np.inf}
    assert (result.epoch, result.classifier, result.elapsed) == (1, "linear", 3.0)
    assert trainer.upgrade_meta(dict(meta), 2) == meta  # the current format is left alone


def test_exclusion_widens_the_known_pixels_of_both_partial_terms(phantom_sets, monkeypatch):
    assert not TrainConfig().exclusion  # the paper's partial loss by default
    masks = []
    original = trainer_module.supervised_loss

    def spy(logits, target, known, **kw):
        known = known.float()
        if known.ndim == 2:  # whole channels, (B, organs)
            known = known[:, :, None, None]
        masks.append((target.clone(), known.expand_as(target).clone()))
        return original(logits, target, known, **kw)

    monkeypatch.setattr(trainer_module, "supervised_loss", spy)
    seen = {}
    for exclusion in (False, True):
        trainer = _trainer(phantom_sets, method="cda", n_strong=1, exclusion=exclusion)
        trainer.progress = 0.4  # after the warm-up: weak view, then the strong view's terms
        masks.clear()
        trainer.train_step()
        (yw, weak), _, (ys, partial_term) = masks
        seen[exclusion] = weak, partial_term
        for y, known in ((yw, weak), (ys, partial_term)):
            organ = (y * known).amax(dim=1, keepdim=True) > 0.5  # a labeled organ's pixels
            if exclusion:  # every channel known there
                assert (known[organ.expand_as(known)] == 1).all()
            else:
                assert ((known == 0) & organ.expand_as(known)).any()
    for a, b in zip(seen[False], seen[True], strict=True):
        assert torch.all(b >= a) and b.sum() > a.sum()


def test_train_records_exclusion(tmp_path, phantom_sets):
    model = train(output=tmp_path / "m", datasets=_specs(phantom_sets), method="partial",
                  epochs=1, size=32, base_channels=8, progress=False, exclusion=True)
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["exclusion"] is True
