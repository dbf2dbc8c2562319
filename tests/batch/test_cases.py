"""Cases of a batch: splitting into parts, output paths, matching files, batch inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sparseseg import batch
from sparseseg.batch import (
    is_batch_input,
    match_case_files,
    output_path,
    split_parts,
    validate_parts,
)
from sparseseg.errors import InputError, SparsesegError
from sparseseg.io import Case

MakeCases = Callable[..., list[Case]]

# --- splitting -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_cases", [0, 1, 5, 12])
@pytest.mark.parametrize("num_parts", [1, 2, 3, 7])
def test_every_case_in_exactly_one_part(make_cases: MakeCases, n_cases: int,
                                        num_parts: int) -> None:
    names = [f"c{i:02d}" for i in range(n_cases)]
    shuffled = make_cases(names[::-1][1::2] + names[::-1][0::2])  # input order must not matter
    parts = [[c.name for c in split_parts(shuffled, num_parts, i)] for i in range(num_parts)]
    assert sorted(n for p in parts for n in p) == names
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # nnU-Net's convention: sorted case names, every num_parts-th from part_id on.
    assert parts == [names[i::num_parts] for i in range(num_parts)]


def test_split_keeps_the_cases_themselves(make_cases: MakeCases) -> None:
    cases = make_cases(["b", "a", "c"], Path("/data"))
    assert split_parts(cases) == [cases[1], cases[0], cases[2]]
    assert split_parts(cases, 2, 1) == [cases[0]]  # "b", the second sorted name
    assert split_parts(cases, 2, 1)[0].image == Path("/data/b_0000.nii.gz")


@pytest.mark.parametrize(("num_parts", "part_id", "message"), [
    (2, 2, "0..1"), (2, -1, "0..1"), (0, 0, "at least 1"), (1, 1, "0..0"),
])
def test_invalid_split_is_refused(make_cases: MakeCases, num_parts: int, part_id: int,
                                  message: str) -> None:
    with pytest.raises(SparsesegError, match=message) as info:
        validate_parts(num_parts, part_id)
    assert "\n" not in str(info.value)
    with pytest.raises(SparsesegError, match=message):
        split_parts(make_cases(["a"]), num_parts, part_id)


# --- output paths and batch inputs -----------------------------------------------------------


def test_output_path_is_nnunet_naming(tmp_path: Path) -> None:
    assert output_path(tmp_path, "la_003") == tmp_path / "la_003.nii.gz"
    assert output_path(str(tmp_path), "x.y") == tmp_path / "x.y.nii.gz"
    assert batch.OUTPUT_EXTENSION == ".nii.gz"


def test_is_batch_input(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    for name in ("a_0000.nii.gz", "b.nrrd"):
        (volumes / name).write_bytes(b"")
    assert is_batch_input(volumes)
    assert not is_batch_input(volumes / "a_0000.nii.gz")  # a file
    assert not is_batch_input(tmp_path / "missing")
    series = tmp_path / "series"  # one DICOM series: a single image
    series.mkdir()
    for i in range(3):
        (series / f"IM{i}.dcm").write_bytes(b"")
    assert not is_batch_input(series)
    dataset = tmp_path / "dataset"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "imagesTr" / "c_0000.nii.gz").write_bytes(b"")
    assert is_batch_input(dataset)
    empty_dataset = tmp_path / "empty_dataset"
    (empty_dataset / "imagesTr").mkdir(parents=True)
    with pytest.raises(InputError, match="no volume files"):
        is_batch_input(empty_dataset)


# --- matching files to cases -----------------------------------------------------------------


def test_annotations_match_cases_by_name(tmp_path: Path) -> None:
    for name in ("la_x.nii.gz", "case_0001.nii.gz", "other_0000.nrrd", "dup.nii.gz",
                 "dup.mha", "stray.nii.gz", ".la_x.tmp-1234abcd.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.nii.gz").mkdir()  # a folder, not a file
    matches, unmatched = match_case_files(
        ["la_x", "case_0001", "other", "dup", "missing"], tmp_path)
    assert list(matches) == ["la_x", "case_0001", "other", "dup", "missing"]
    assert matches["la_x"] == [tmp_path / "la_x.nii.gz"]
    # A case whose own name ends in _NNNN is matched by its full name, not truncated.
    assert matches["case_0001"] == [tmp_path / "case_0001.nii.gz"]
    assert matches["other"] == [tmp_path / "other_0000.nrrd"]
    assert sorted(matches["dup"]) == [tmp_path / "dup.mha", tmp_path / "dup.nii.gz"]
    assert matches["missing"] == []
    assert unmatched == [tmp_path / "stray.nii.gz"]
    with pytest.raises(InputError, match="no such folder"):
        match_case_files(["a"], tmp_path / "none")
    with pytest.raises(InputError, match="is a file"):
        match_case_files(["a"], tmp_path / "la_x.nii.gz")
