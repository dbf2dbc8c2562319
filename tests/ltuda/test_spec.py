import pytest

from sparseseg.errors import InputError, SparsesegError
from sparseseg.ltuda.spec import DatasetSpec, parse_dataset_args, validate_specs


def test_parse_ok():
    specs = parse_dataset_args([["a", "liver=1,2"], ["b", "spleen=1", "kidney=2"]])
    assert specs[0].organs == {"liver": [1, 2]}
    assert validate_specs(specs) == ["liver", "spleen", "kidney"]


@pytest.mark.parametrize(
    ("group", "match"),
    [
        (["a"], "no organ"),
        (["a", "liver"], "ORGAN=VALUE"),
        (["a", "liver=x"], "integer"),
        (["a", "liver="], "no label value"),
        (["a", "liver=1", "liver=2"], "named twice"),
        (["a", "liver=1", "spleen=1"], "both"),
        (["a", "liver=0"], ">= 1"),
        (["liver=1"], "dataset folder"),
    ],
)
def test_parse_errors_name_the_dataset(group, match):
    with pytest.raises(InputError, match=match) as info:
        parse_dataset_args([group])
    assert "\n" not in str(info.value)


def test_no_dataset():
    with pytest.raises(SparsesegError):
        validate_specs([])
    with pytest.raises(InputError):
        validate_specs([DatasetSpec("x", {})])
