"""Collecting cases from dataset folders, plain folders and file lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparseseg.errors import InputError
from sparseseg.io.dataset import Case, find_cases, is_dataset_folder, read_dataset_json
from sparseseg.io.formats import case_name, split_extension


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_dataset(root: Path, names: list[str], *, labels: bool = True) -> Path:
    for name in names:
        touch(root / "imagesTr" / f"{name}_0000.nii.gz")
        if labels:
            touch(root / "labelsTr" / f"{name}.nii.gz")
    return root


def test_nnunet_layout_with_labels(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "Dataset001", ["b", "a"])
    touch(root / "imagesTr" / "a_0001.nii.gz")  # a second channel is not a case
    assert is_dataset_folder(root)
    cases = find_cases(root, with_labels=True)
    assert cases == [
        Case("a", root / "imagesTr" / "a_0000.nii.gz", root / "labelsTr" / "a.nii.gz"),
        Case("b", root / "imagesTr" / "b_0000.nii.gz", root / "labelsTr" / "b.nii.gz"),
    ]
    assert all(c.label is None for c in find_cases(root))


def test_missing_label_is_an_error(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["a", "b"])
    (root / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(InputError, match="b_0000.nii.gz has no label") as exc:
        find_cases(root, with_labels=True)
    assert str(root) in str(exc.value)
    assert len(find_cases(root)) == 2  # without labels it is fine


def test_with_labels_needs_a_dataset_folder(tmp_path: Path) -> None:
    touch(tmp_path / "plain" / "x.nii.gz")
    with pytest.raises(InputError, match="not a dataset folder"):
        find_cases(tmp_path / "plain", with_labels=True)


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "ds" / "imagesTr").mkdir(parents=True)
    with pytest.raises(InputError, match="no volume files"):
        find_cases(tmp_path / "ds")


def test_plain_folder(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    for name in ["c.nrrd", "a_0000.nii.gz", "b.mha", "notes.txt"]:
        touch(folder / name)
    assert [c.name for c in find_cases(folder)] == ["a", "b", "c"]


def test_folder_of_dicom_series(tmp_path: Path) -> None:
    touch(tmp_path / "dicoms" / "p1" / "1.dcm")
    touch(tmp_path / "dicoms" / "p2" / "1.dcm")
    cases = find_cases(tmp_path / "dicoms")
    assert [(c.name, c.image.name) for c in cases] == [("p1", "p1"), ("p2", "p2")]
    single = find_cases(tmp_path / "dicoms" / "p1")
    assert single == [Case("p1", tmp_path / "dicoms" / "p1")]


def test_list_of_files_keeps_order(tmp_path: Path) -> None:
    files = [touch(tmp_path / n) for n in ["z.nii.gz", "a.nii"]]
    assert [c.name for c in find_cases([str(f) for f in files])] == ["z", "a"]


def test_duplicate_names_made_unique(tmp_path: Path) -> None:
    files = [
        touch(tmp_path / "x" / "case.nii.gz"),
        touch(tmp_path / "y" / "case.nii.gz"),
        touch(tmp_path / "z" / "case_1.nii.gz"),
        touch(tmp_path / "w" / "case.nii.gz"),
    ]
    cases = find_cases(files)
    names = [c.name for c in cases]
    assert len(set(names)) == len(names) == 4
    assert names[0] == "case" and names[2] == "case_1"
    assert [c.image for c in cases] == files


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as exc:
        find_cases([tmp_path / "nope.nii.gz"])
    assert "nope.nii.gz" in str(exc.value)


def test_dataset_json(tmp_path: Path) -> None:
    assert read_dataset_json(tmp_path) == {}
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "liver": 1}}')
    assert read_dataset_json(tmp_path)["labels"]["liver"] == 1
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        read_dataset_json(tmp_path)


@pytest.mark.parametrize(
    ("name", "stem", "ext", "case"),
    [
        ("la_001_0000.nii.gz", "la_001_0000", ".nii.gz", "la_001"),
        ("CT.NII.GZ", "CT", ".NII.GZ", "CT"),
        ("x.nrrd", "x", ".nrrd", "x"),
        ("case_12.mha", "case_12", ".mha", "case_12"),
        ("a.b.nii", "a.b", ".nii", "a.b"),
    ],
)
def test_names(name: str, stem: str, ext: str, case: str) -> None:
    assert split_extension(name) == (stem, ext)
    assert case_name(name) == case


def test_real_datasets(real_data: Path) -> None:
    for folder in ["AbdomenTS", "LeftAtrium", "Cardiac"]:
        cases = find_cases(real_data / folder, with_labels=True)
        assert cases and all(c.label is not None and c.label.exists() for c in cases)
    assert len(find_cases(real_data / "LeftAtrium")) == 40
