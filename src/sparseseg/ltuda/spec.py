"""Which organs each training dataset labels, and parsing ``PATH ORGAN=V[,V...]`` text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sparseseg.errors import InputError, SparsesegError


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset folder (nnU-Net layout) and the organs its labels cover.

    For organs not named here, the dataset's zeros mean "unknown", not background.

    Args:
        path: Dataset folder with ``imagesTr/`` and ``labelsTr/``.
        organs: Organ name -> label values that mark it in this dataset's label maps.

    Example:
        >>> DatasetSpec("Task03_Liver", {"liver": [1, 2]}).organs
        {'liver': [1, 2]}
    """

    path: Path
    organs: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(
            self, "organs", {str(k): [int(v) for v in vs] for k, vs in dict(self.organs).items()}
        )


def validate_specs(specs: Sequence[DatasetSpec]) -> list[str]:
    """Check dataset specs and return the organ names in order of first appearance.

    Raises:
        SparsesegError: No dataset, a dataset naming no organ, an organ without values, a
            value below 1, or one value used for two organs of one dataset.
    """
    if not specs:
        raise SparsesegError("no training dataset given")
    organs: list[str] = []
    for spec in specs:
        if not isinstance(spec, DatasetSpec):
            raise SparsesegError(f"expected a DatasetSpec, got {type(spec).__name__}")
        if not spec.organs:
            raise InputError("no organ named for this dataset (give ORGAN=VALUE)", spec.path)
        owner: dict[int, str] = {}
        for name, values in spec.organs.items():
            if not name:
                raise InputError("empty organ name", spec.path)
            if not values:
                raise InputError(f"organ {name!r} has no label value", spec.path)
            for value in values:
                if value < 1:
                    raise InputError(
                        f"organ {name!r}: label value {value} must be >= 1 (0 is unknown)",
                        spec.path,
                    )
                if value in owner:
                    raise InputError(
                        f"label value {value} given for both {owner[value]!r} and {name!r}",
                        spec.path,
                    )
                owner[value] = name
            if name not in organs:
                organs.append(name)
    return organs


def parse_organ(text: str, dataset: str | Path) -> tuple[str, list[int]]:
    """Parse ``ORGAN=V[,V...]`` into ``(name, values)``.

    Raises:
        InputError: The text is malformed; the message names the dataset.
    """
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(f"expected ORGAN=VALUE[,VALUE...], got {text!r}", dataset)
    try:
        values = [int(v) for v in rest.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"expected integer label values in {text!r} (ORGAN=VALUE[,VALUE...])", dataset
        ) from None
    if not values:
        raise InputError(f"no label value in {text!r} (ORGAN=VALUE[,VALUE...])", dataset)
    return name, values


def parse_dataset_args(groups: Sequence[Sequence[str]]) -> list[DatasetSpec]:
    """Turn CLI groups ``[PATH, ORGAN=V, ...]`` into dataset specs.

    Raises:
        InputError: A group without organs, malformed organ text, or an organ named twice.
    """
    specs = []
    for group in groups:
        if not group:
            raise SparsesegError("--dataset needs a PATH and at least one ORGAN=VALUE")
        path, items = group[0], list(group[1:])
        if "=" in path:
            raise InputError("--dataset must start with the dataset folder, then ORGAN=VALUE", path)
        if not items:
            raise InputError("no organ given; write --dataset PATH ORGAN=VALUE[,VALUE...]", path)
        organs: dict[str, list[int]] = {}
        for item in items:
            name, values = parse_organ(item, path)
            if name in organs:
                raise InputError(f"organ {name!r} is named twice for this dataset", path)
            organs[name] = values
        specs.append(DatasetSpec(Path(path), organs))
    validate_specs(specs)
    return specs
