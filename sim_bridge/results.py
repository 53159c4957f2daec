"""Results files of a LIBERO-GOAL run: one JSON with everything, plus per-episode and per-task CSVs.

The bridge node and in-process evaluation both write through `write_results`, so every run is
read back by the same tools. A record is a dict with at least the fields of
`EpisodeResult`; extra fields (decoding statistics, say) are carried into both files.

An interrupted episode (the run was stopped while it ran: `interrupted: true`, success false,
steps and seconds so far) is listed with the episodes but is no outcome of the policy: the
summaries' episodes, success rate and means cover the finished episodes only, and `interrupted`
counts the others.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import fmean

from .tables import to_builtin, write_csv


def summarize(records: list[dict]) -> dict:
    """Success rate, steps and seconds per episode, per task and over the whole run."""
    task_ids = sorted({record["task_id"] for record in records})
    per_task = []
    for task_id in task_ids:
        rows = [record for record in records if record["task_id"] == task_id]
        per_task.append({"task_id": task_id, "instruction": rows[0]["instruction"], **_aggregate(rows)})
    return {"overall": _aggregate(records), "per_task": per_task}


def _aggregate(records: list[dict]) -> dict:
    rows = [row for row in records if not row.get("interrupted", False)]     # finished episodes
    successes = sum(bool(row["success"]) for row in rows)

    def mean(key: str) -> float:
        return fmean(row[key] for row in rows) if rows else 0.0

    return {
        "episodes": len(rows),
        "interrupted": len(records) - len(rows),
        "successes": successes,
        "success_rate": successes / len(rows) if rows else 0.0,
        "mean_steps": mean("steps"),
        "mean_wall_seconds": mean("wall_seconds"),
        "mean_sim_seconds": mean("sim_seconds"),
        "mean_reset_seconds": mean("reset_seconds"),
        "rejected_actions": sum(row["rejected_actions"] for row in rows),
        "clipped_actions": sum(row["clipped_actions"] for row in rows),
    }


def write_results(directory: str | Path, records: list[dict], metadata: dict | None = None,
                  run_name: str | None = None) -> dict[str, Path]:
    """Write `<run_name>.json`, `<run_name>_episodes.csv` and `<run_name>_tasks.csv`.

    The run name defaults to `libero_goal_<local time>`, so runs sharing a directory never
    overwrite each other. Returns the three paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run_name = run_name or time.strftime("libero_goal_%Y%m%d_%H%M%S")
    summary = summarize(records)
    paths = {"json": directory / f"{run_name}.json",
             "episodes_csv": directory / f"{run_name}_episodes.csv",
             "tasks_csv": directory / f"{run_name}_tasks.csv"}
    document = {"run_name": run_name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "metadata": metadata or {}, **summary, "episodes": records}
    paths["json"].write_text(json.dumps(document, indent=2, default=to_builtin) + "\n")
    write_csv(paths["episodes_csv"], records)
    write_csv(paths["tasks_csv"], summary["per_task"] + [{"task_id": "all", "instruction": "",
                                                            **summary["overall"]}])
    return paths
