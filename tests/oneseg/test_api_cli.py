"""OneSeg through its Python API and its CLI, on phantoms and on a real MRI volume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparseseg import oneseg
from sparseseg.cli.main import main
from sparseseg.errors import InputError
from sparseseg.io import Volume, read_label, read_volume, write_volume
from sparseseg.metrics import dice
from sparseseg.oneseg.network import NetworkConfig
from sparseseg.oneseg.training import TrainConfig
from sparseseg_test_utils import real_case


def _one_slice(label: np.ndarray, value: int) -> tuple[int, np.ndarray]:
    k = int(np.argmax((label == value).sum(axis=(0, 1))))
    ann = np.zeros_like(label)
    ann[:, :, k] = label[:, :, k]
    return k, ann


def test_select_prints_a_slice_inside_the_volume(tiny_model, phantom_folder, capsys) -> None:
    code = main(
        [
            "oneseg",
            "select",
            "-m",
            str(tiny_model),
            "-i",
            str(phantom_folder / "image.nii.gz"),
            "--json",
        ]
    )
    assert code == 0
    k = json.loads(capsys.readouterr().out)["slice"]
    assert 0 <= k < read_volume(phantom_folder / "image.nii.gz").shape[2]
    assert k == oneseg.select(model=tiny_model, image=phantom_folder / "image.nii.gz")


def test_select_middle_criterion(tiny_model, phantom_folder, tmp_path, capsys) -> None:
    image = read_volume(phantom_folder / "image.nii.gz")
    # Empty (constant) slices at the start do not count: the middle of slices 6..n-1.
    padded = np.concatenate([np.full(image.shape[:2] + (6,), -1000.0), image.array], axis=2)
    path = tmp_path / "padded.nii.gz"
    write_volume(path, padded, Volume(padded, image.spacing, image.origin, image.direction))
    args = ["oneseg", "select", "-m", str(tiny_model), "-i", str(path), "--criterion", "middle"]
    assert main(args) == 0
    n = image.shape[2]
    assert int(capsys.readouterr().out) == 6 + n // 2
    with pytest.raises(InputError, match="criterion"):
        oneseg.select(model=tiny_model, image=path, criterion="reach")


def test_cli_propagate_multi_organ(tiny_model, phantom_folder, tmp_path) -> None:
    image = read_volume(phantom_folder / "image.nii.gz")
    truth = read_label(phantom_folder / "label.nii.gz").array
    _, ann = _one_slice(truth, 1)
    assert len(np.unique(ann)) > 2  # several organs on the annotated slice
    write_volume(tmp_path / "ann.nii.gz", ann, image)
    out = tmp_path / "out.nii.gz"
    code = main(
        [
            "-q",
            "oneseg",
            "propagate",
            "-m",
            str(tiny_model),
            "-i",
            str(phantom_folder / "image.nii.gz"),
            "-a",
            str(tmp_path / "ann.nii.gz"),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    result = read_label(out)
    assert result.same_geometry(image)
    assert set(np.unique(result.array)) == set(np.unique(ann))
    # --no-anchor: the paper's chain, from the last propagated slice only.
    plain = tmp_path / "plain.nii.gz"
    args = ["-q", "oneseg", "propagate", "-m", str(tiny_model), "-i",
            str(phantom_folder / "image.nii.gz"), "-a", str(tmp_path / "ann.nii.gz")]
    assert main([*args, "-o", str(plain), "--no-anchor"]) == 0
    want = oneseg.propagate(model=tiny_model, image=image, annotation=ann, anchor=False,
                            device="cpu")
    assert (read_label(plain).array == want.array).all()


def test_cli_propagate_from_a_2d_slice(tiny_model, phantom_folder, tmp_path) -> None:
    truth = read_label(phantom_folder / "label.nii.gz").array
    k, ann = _one_slice(truth, 1)
    import SimpleITK as sitk

    sitk.WriteImage(
        sitk.GetImageFromArray(np.ascontiguousarray(ann[:, :, k].T)), str(tmp_path / "slice.nii.gz")
    )
    out = tmp_path / "out.nii.gz"
    args = [
        "oneseg",
        "propagate",
        "-m",
        str(tiny_model),
        "-i",
        str(phantom_folder / "image.nii.gz"),
        "-a",
        str(tmp_path / "slice.nii.gz"),
        "-o",
        str(out),
        "-q",
    ]
    assert main(args + ["--slice", str(k)]) == 0
    assert (read_label(out).array[:, :, k] == ann[:, :, k]).all()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparseseg: error:")
    assert "Traceback" not in err[0]
    return err[0]


def test_cli_bad_inputs_exit_2_without_output(tiny_model, phantom_folder, tmp_path, capsys):
    image_path = phantom_folder / "image.nii.gz"
    image = read_volume(image_path)
    out = tmp_path / "out.nii.gz"
    empty = tmp_path / "empty.nii.gz"
    write_volume(empty, np.zeros(image.shape, np.uint8), image)
    two = np.zeros(image.shape, np.uint8)
    two[5:9, 5:9, 3] = 1
    two[5:9, 5:9, 7] = 1
    write_volume(tmp_path / "two.nii.gz", two, image)
    other_grid = Volume(two, tuple(s * 2 for s in image.spacing), image.origin, image.direction)
    write_volume(tmp_path / "other_grid.nii.gz", two, other_grid)
    one, other = np.zeros(image.shape[:2], np.uint8), np.zeros(image.shape[:2], np.uint8)
    one[5:9, 5:9], other[6:10, 6:10] = 1, 1
    plane = Volume(one, (1.0, 1.0), (0.0, 0.0), np.eye(2))
    write_volume(tmp_path / "one.nii.gz", one, plane)
    write_volume(tmp_path / "other.nii.gz", other, plane)
    base = ["oneseg", "propagate", "-m", str(tiny_model), "-i", str(image_path), "-o", str(out)]
    cases = [
        (base + ["-a", str(empty)], "no labeled slice"),
        (base + ["-a", str(tmp_path / "other_grid.nii.gz")], "geometry"),
        (base + ["-a", str(tmp_path / "one.nii.gz"), str(tmp_path / "other.nii.gz"),
                 "--slice", "4", "--slice", "4"], "slice 4 is annotated twice"),
        (base + ["-a", str(tmp_path / "one.nii.gz"), str(tmp_path / "other.nii.gz"),
                 "--slice", "4"], "one --slice per file"),
        (base + ["-a", str(tmp_path / "one.nii.gz"), "--slice", "4", "--method",
                 "interpolation"], "at least 2 annotated slices"),
        (base + ["-a", str(tmp_path / "missing.nii.gz")], "no such file"),
        (base + ["-a", str(tmp_path / "two.nii.gz"), "--intensity-weight", "-1"],
         "--intensity-weight needs a number >= 0, got -1"),
        (base + ["-a", str(tmp_path / "two.nii.gz"), "--intensity-weight", "nan"],
         "--intensity-weight needs a number >= 0"),
        (
            [
                "oneseg",
                "propagate",
                "-m",
                str(tmp_path / "nomodel"),
                "-i",
                str(image_path),
                "-a",
                str(tmp_path / "two.nii.gz"),
                "-o",
                str(out),
            ],
            "model folder does not exist",
        ),
        (
            ["oneseg", "select", "-m", str(tiny_model), "-i", str(empty.parent / "x.png")],
            "no such file",
        ),
        (["oneseg", "suggest", "-m", str(tiny_model), "-i", str(image_path), "-a", str(empty)],
         "no labeled slice"),
        (["oneseg", "suggest", "-i", str(image_path), "-a", str(tmp_path / "two.nii.gz"),
          "--method", "copy", "--confidence", str(tmp_path / "no_dir" / "c.csv")],
         "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in _error_line(capsys)
        assert not out.exists()
    assert not list(tmp_path.glob(".*tmp*"))


def test_refuses_2d_images_and_tiny_volumes(tiny_model, tmp_path, capsys) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((20, 20), np.float32)), str(tmp_path / "flat.nii.gz")
    )
    assert (
        main(["oneseg", "select", "-m", str(tiny_model), "-i", str(tmp_path / "flat.nii.gz")]) == 2
    )
    assert "expected a 3D volume" in _error_line(capsys)
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((5, 4, 4), np.float32)), str(tmp_path / "tiny.nii.gz")
    )
    assert (
        main(["oneseg", "select", "-m", str(tiny_model), "-i", str(tmp_path / "tiny.nii.gz")]) == 2
    )
    assert "too small" in _error_line(capsys)


def test_train_refuses_folders_without_volumes(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    assert (
        main(["oneseg", "train", "-q", "-i", str(tmp_path / "empty"), "-o", str(tmp_path / "m")])
        == 2
    )
    assert "no DICOM series" in _error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_training_is_reproducible_with_a_seed(phantom_folder, tmp_path) -> None:
    config = TrainConfig(epochs=1, pairs_per_epoch=4, batch_size=2, size=32, clusters=3)
    net = NetworkConfig(width=8, embedding=8, radius=3)
    paths = [
        oneseg.train(
            images=[phantom_folder / "train"],
            output=tmp_path / f"m{i}",
            network=net,
            training=config,
            device="cpu",
            progress=False,
        )
        for i in range(2)
    ]
    a, b = ((p / "model.safetensors").read_bytes() for p in paths)
    assert a == b


def test_real_mri_volume_end_to_end(real_data, tmp_path) -> None:
    """Train briefly on two LeftAtrium images, propagate on a third, score against its label."""
    from sparseseg.io import find_cases

    cases = find_cases(real_data / "LeftAtrium", with_labels=True)
    config = TrainConfig(epochs=1, pairs_per_epoch=240, batch_size=4, size=64, clusters=4)
    model = oneseg.train(
        images=[c.image for c in cases[:2]],
        output=tmp_path / "m",
        network=NetworkConfig(width=16, embedding=16, radius=4),
        training=config,
        device="cpu",
        progress=False,
    )
    image_path, label_path = real_case("LeftAtrium", cases[-1].name)
    truth = read_label(label_path).array
    _, ann = _one_slice(truth, 1)
    out = tmp_path / "pred.nii.gz"
    oneseg.propagate(model=model, image=image_path, annotation=ann, output=out)
    pred = read_label(out)
    assert pred.same_geometry(read_volume(image_path))
    score = dice(pred.array == 1, truth == 1)
    # 60 steps take seconds and already carry the atrium through most of its slices
    # (measured 0.55; an untrained network scores about 0.2 here).
    assert score > 0.45, score


def test_propagate_command_loads_neither_scipy_nor_the_pictures(phantom_folder, tmp_path) -> None:
    """Start-up time: scipy.ndimage alone adds 0.2 s to a command that needs none of it."""
    import subprocess
    import sys

    label = read_label(phantom_folder / "label.nii.gz")
    _, ann = _one_slice(label.array, 1)
    write_volume(tmp_path / "ann.nii.gz", ann, label)
    code = (
        "import sys\n"
        "from sparseseg.cli.main import main\n"
        f"code = main(['oneseg', 'propagate', '-q', '-i', {str(phantom_folder / 'image.nii.gz')!r},"
        f" '-a', {str(tmp_path / 'ann.nii.gz')!r}, '-o', {str(tmp_path / 'out.nii.gz')!r}])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'sklearn'}),"
        " 'sparseseg.viz' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "[]", "False"], out.stderr
    assert read_label(tmp_path / "out.nii.gz").array.any()
