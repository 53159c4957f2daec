"""Report files shared by `spec-vla-eval`, `spec-vla-harness` and `spec-vla-analyze`.

A report is one Markdown page (tables, then figures), one JSON document with every number, and
one CSV per table, all named after a common stem. It opens with a provenance line (verifier:
the miniature or a real checkpoint; CPU or which GPU; how much data) that every plot repeats,
so no figure travels without what produced it.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from sim_bridge.tables import to_builtin, write_csv

from ..decoding.stats import DecodeStats
from ..drafts.tree import SOURCES
from ..vla.constants import ACTION_DIM
from ..vla.miniature import MINIATURE


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    format: str = ""                 # format spec of the Markdown cell (".2f", ".1%"); JSON/CSV keep raw values


@dataclass
class Table:
    name: str                        # CSV file suffix and JSON key
    title: str
    columns: list[Column]
    rows: list[dict]
    note: str = ""                   # printed under the table


@dataclass
class Report:
    title: str
    provenance: str
    tables: list[Table]
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)      # more JSON fields (settings, raw data)

    def markdown(self, figure_dir: Path | None = None) -> str:
        """The page; figure links are relative to `figure_dir` (the Markdown file's directory)."""
        lines = [f"# {self.title}", "", f"_{self.provenance}_", ""]
        for note in self.notes:
            lines += [note, ""]
        for table in self.tables:
            lines += [f"## {table.title}", "", markdown_table(table), ""]
            if table.note:
                lines += [table.note, ""]
        for figure in self.figures:
            link = os.path.relpath(figure, figure_dir) if figure_dir else figure
            lines += [f"![{Path(figure).stem}]({link})", ""]
        return "\n".join(lines)

    def write(self, directory: str | Path, stem: str) -> dict[str, Path]:
        """`<stem>.md`, `<stem>.json` and `<stem>_<table>.csv` in `directory`; returns the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": directory / f"{stem}.md", "json": directory / f"{stem}.json"}
        paths["markdown"].write_text(self.markdown(directory))
        document = {"title": self.title, "provenance": self.provenance,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "notes": self.notes,
                    "tables": {table.name: table.rows for table in self.tables},
                    "figures": [str(figure) for figure in self.figures], **self.extra}
        paths["json"].write_text(json.dumps(document, indent=2, default=to_builtin) + "\n")
        for table in self.tables:
            paths[table.name] = directory / f"{stem}_{table.name}.csv"
            write_csv(paths[table.name], table.rows)
        return paths


def markdown_table(table: Table) -> str:
    header = "| " + " | ".join(column.header for column in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(row.get(column.key), column.format) for column in table.columns) + " |"
            for row in table.rows]
    return "\n".join([header, rule, *body])


def cell(value, spec: str = "") -> str:
    """One Markdown cell: missing values (None, NaN) as a dash, booleans as yes / no."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if spec else str(value)


def percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def hardware_description(device: str, threads: int | None = None) -> str:
    """'GPU <name>' or 'CPU (N cores, T torch threads)'; `threads` as recorded by the run (default:
    this process's setting, right only when the run is this process)."""
    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    threads = torch.get_num_threads() if threads is None else threads
    return f"CPU ({os.cpu_count()} cores, {threads} torch thread{'s' if threads > 1 else ''})"


def verifier_description(verifier_name: str) -> str:
    if verifier_name.startswith(MINIATURE):
        return f"{verifier_name} (the embedded miniature OpenVLA: exercises the code, solves no task)"
    return f"checkpoint {verifier_name}"


def provenance(verifier_name: str, device: str, dtype, data: str, threads: int | None = None) -> str:
    """'Verifier ... on <hardware>, <dtype>; <what data>' — the line every report and plot carries."""
    return (f"Verifier {verifier_description(verifier_name)} on {hardware_description(device, threads)}, "
            f"{str(dtype).removeprefix('torch.')}; {data}")


def draft_train_accuracy(draft_config: dict | None) -> float | None:
    """Mean per-position training token accuracy recorded in a draft checkpoint's JSON
    (`ResolvedDraft.config`; teacher-forced, as `spec-vla-train-draft` reports it); None for
    drafts without a checkpoint or a checkpoint without that record."""
    if draft_config is None:
        return None
    accuracy = draft_config.get("training", {}).get("train_accuracy")
    return statistics.fmean(accuracy) if accuracy else None


TREE_COLUMNS = [Column("accepted_depth", "accepted depth", ".2f")] + \
    [Column(f"kept_{source}", f"kept: {source}", ".0%") for source in SOURCES]


def position_outcome_counts(stats: Iterable[DecodeStats]) -> tuple[list[int], list[int]]:
    """(accepted, judged) proposal counts per draft position over many actions."""
    accepted, judged = [0] * ACTION_DIM, [0] * ACTION_DIM
    for action in stats:
        for position, was_accepted in action.position_outcomes():
            judged[position] += 1
            accepted[position] += was_accepted
    return accepted, judged
