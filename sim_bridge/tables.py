"""CSV and JSON helpers for results tables: standard library only, so the bridge process that writes
its results never loads the model stack (torch, timm, transformers). analysis/report.py uses the
same two functions for the evaluation's reports."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def write_csv(path: Path, rows: list[dict]) -> None:
    """Every key of every row is a column; lists and dicts are written as JSON."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with Path(path).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: json.dumps(value, default=to_builtin) if isinstance(value, (list, dict)) else value
                             for key, value in row.items()})


def to_builtin(value):
    """numpy scalars and arrays, and paths, as plain JSON values (a `json.dumps` default)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
