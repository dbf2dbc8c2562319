"""``sparseseg oneseg refine``: folders in, refined labels out; bad inputs stop it before
anything is written; a real LeftAtrium run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sparseseg import oneseg
from sparseseg.cli.main import main
from sparseseg.data.phantom import make_phantom
from sparseseg.errors import InputError
from sparseseg.io import read_label, read_volume, write_volume
from sparseseg.metrics import dice
from sparseseg.oneseg import refinement
from sparseseg_test_utils import real_case

SHAPE = (40, 36, 10)
SPACING = (2.0, 2.0, 4.0)
NAMES = [f"case_{i}" for i in range(3)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Images, one-slice annotations, and 'propagated' labels (the truth grown by a pixel
    in-plane off the annotated slice) of three multi-label phantoms."""
    root = tmp_path_factory.mktemp("refine")
    for sub in ("images", "ann", "labels"):
        (root / sub).mkdir()
    for i, name in enumerate(NAMES):
        image, label = make_phantom(shape=SHAPE, spacing=SPACING, seed=30 + i)
        write_volume(root / "images" / f"{name}_0000.nii.gz", image.array, image)
        k = int(np.argmax((label.array == 1).sum(axis=(0, 1))))
        ann = np.zeros_like(label.array)
        ann[:, :, k] = label.array[:, :, k]
        write_volume(root / "ann" / f"{name}.nii.gz", ann, image)
        grown = ndimage.grey_dilation(label.array, size=(3, 3, 1))
        grown[:, :, k] = label.array[:, :, k]
        write_volume(root / "labels" / f"{name}.nii.gz", grown, image)
    return root / "images", root / "ann", root / "labels"


def _argv(images: Path, ann: Path, labels: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "oneseg", "refine", "-i", str(images), "-a", str(ann), "-l", str(labels),
            "-o", str(out), "--steps", "3", "--finetune-steps", "1", "--device", "cpu",
            *extra]


def test_refine_writes_every_case_in_its_image_geometry(dataset, tmp_path):
    images, ann, labels = dataset
    out = tmp_path / "refined"
    assert main(_argv(images, ann, labels, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.nii.gz" for n in NAMES]
    for name in NAMES:
        image = read_volume(images / f"{name}_0000.nii.gz")
        drawn = read_label(ann / f"{name}.nii.gz").array
        result = read_label(out / f"{name}.nii.gz")
        assert result.same_geometry(image)
        assert set(np.unique(result.array)) <= {0, 1, 2, 3, 4}
        k = int(np.flatnonzero(drawn.any(axis=(0, 1)))[0])
        for value in np.unique(drawn[:, :, k])[1:]:  # the labels drawn there, kept exactly
            assert np.array_equal(result.array[:, :, k] == value, drawn[:, :, k] == value)


def test_refine_is_repeatable(dataset, tmp_path):
    images, ann, labels = dataset
    runs = []
    for run in ("a", "b"):
        written = oneseg.refine(images=images, annotations=ann, labels=labels,
                                output=tmp_path / run, steps=3, finetune_steps=2, seed=1,
                                device="cpu", progress=False)
        runs.append([read_label(p).array for p in written])
    for first, second in zip(*runs, strict=True):
        assert np.array_equal(first, second)


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize("fault", ["other-grid", "missing", "output-is-labels", "steps"])
def test_bad_input_stops_before_anything_is_written(dataset, tmp_path, capsys, fault):
    images, ann, labels = dataset
    labels = _copy(labels, tmp_path)
    out = tmp_path / "out"
    extra: list[str] = []
    if fault == "other-grid":
        bad = labels / f"{NAMES[1]}.nii.gz"
        image, _ = make_phantom(shape=(40, 36, 8), spacing=SPACING, seed=1)
        write_volume(bad, np.zeros(image.shape, np.uint8), image)
        message = f"{bad}: shape (40, 36, 8) differs from image shape (40, 36, 10)"
    elif fault == "missing":
        (labels / f"{NAMES[2]}.nii.gz").unlink()
        message = f"no label volume for case {NAMES[2]} (expected {labels / NAMES[2]}.nii.gz)"
    elif fault == "output-is-labels":
        out = labels
        message = "is also the label folder"
    else:
        extra = ["--finetune-steps", "-1"]
        message = "--finetune-steps must be >= 0, got -1"
    before = sorted(p.name for p in labels.iterdir())
    capsys.readouterr()
    assert main(_argv(images, ann, labels, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparseseg: error:") and message in err[0], err
    assert sorted(p.name for p in labels.iterdir()) == before
    if fault != "output-is-labels":
        assert not out.exists()


@pytest.mark.usefixtures("real_data")
def test_refine_on_real_leftatrium_volumes(tmp_path):
    """Two LeftAtrium volumes, two slices each, propagated with the default model and
    refined by a briefly trained network: annotated slices kept, the atrium still there."""
    for sub in ("images", "ann", "labels"):
        (tmp_path / sub).mkdir()
    truths = {}
    for pattern in ("la_06sr5rbr", "la_0rzdk210"):
        image_path, label_path = real_case("LeftAtrium", pattern)
        image = read_volume(image_path)
        truth = read_label(label_path).array > 0
        zs = np.flatnonzero(truth.any(axis=(0, 1)))
        ann = np.zeros(truth.shape, np.uint8)
        for k in (zs[len(zs) // 4], zs[3 * len(zs) // 4]):
            ann[:, :, k] = truth[:, :, k]
        name = label_path.name.split(".")[0]
        shutil.copy(image_path, tmp_path / "images" / image_path.name)
        write_volume(tmp_path / "ann" / f"{name}.nii.gz", ann, image)
        oneseg.propagate(image=image, annotation=ann, output=tmp_path / "labels" /
                         f"{name}.nii.gz", device="cpu")
        truths[name] = (truth, ann)
    written = oneseg.refine(images=tmp_path / "images", annotations=tmp_path / "ann",
                            labels=tmp_path / "labels", output=tmp_path / "out", steps=6,
                            finetune_steps=2, device="cpu", progress=False)
    assert [p.name for p in written] == sorted(f"{n}.nii.gz" for n in truths)
    for path in written:
        truth, ann = truths[path.name.split(".")[0]]
        result = read_label(path).array
        drawn = ann.any(axis=(0, 1))
        assert np.array_equal(result[:, :, drawn], ann[:, :, drawn])
        assert dice(result > 0, truth) > 0.6


def test_a_saved_network_refines_as_the_run_that_trained_it(dataset, tmp_path, monkeypatch):
    images, ann, labels = dataset
    saved = tmp_path / "net"
    assert main(_argv(images, ann, labels, tmp_path / "trained", "--save-model",
                      str(saved))) == 0
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]

    def no_training(*args, **kwargs):
        raise AssertionError("a saved network is not trained again")

    monkeypatch.setattr(refinement, "train_rounds", no_training)
    assert main(_argv(images, ann, labels, tmp_path / "reused", "-m", str(saved))) == 0
    for name in NAMES:
        first = read_label(tmp_path / "trained" / f"{name}.nii.gz").array
        again = read_label(tmp_path / "reused" / f"{name}.nii.gz").array
        assert np.array_equal(first, again)


def test_a_saved_network_must_know_every_label(dataset, tmp_path, capsys):
    images, ann, labels = dataset
    saved = tmp_path / "net"
    refinement.save_refiner(saved, refinement.new_network(3), classes=np.array([0, 1, 2]),
                            size=32)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_argv(images, ann, labels, out, "-m", str(saved))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        f"sparseseg: error: {saved}: predicts the labels [0, 1, 2], not [3, 4] of the data")
    assert not out.exists()


def test_refine_takes_a_saved_network_or_saves_one_not_both(dataset, tmp_path):
    images, ann, labels = dataset
    with pytest.raises(InputError, match="not both"):
        oneseg.refine(images=images, annotations=ann, labels=labels, output=tmp_path / "out",
                      model=tmp_path / "a", save_model=tmp_path / "b", progress=False)
    assert not (tmp_path / "out").exists()
