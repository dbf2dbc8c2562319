"""Tables the benchmarks write."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_csv(path: Path, rows: Sequence[Mapping]) -> Path:
    """Write rows (dicts with the same keys) as CSV."""
    if not rows:
        logging.warning("%s: no rows to write", path)
        return path
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
