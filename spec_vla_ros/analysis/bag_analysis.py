"""`spec-vla-analyze BAG`: decode statistics, actions and episode outcomes of a recorded run.

Reads bags written by the package's recorder, or by `ros2 bag record -s mcap` with the same
topics (remapped or namespaced names included), through `bags.read_bag`; prints a Markdown
report and writes it, with its JSON, CSVs and plots, next to the bag. Timings are those of the
machine that ran the policy, which the bag does not name.

A bag whose recorder was killed (no metadata.yaml or MCAP summary) is analysed from what reached
the disk, with a one-line "recovered N messages from an unfinished bag" notice; `spec-vla-bag-reindex
BAG` writes a complete copy. Messages the analysis cannot use are skipped with a count.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from rosbags.highlevel import AnyReaderError

from sim_bridge.results import summarize

from ..decoding.stats import DecodeStats
from ..cli import ArgumentParser, fail
from . import plots
from .bags import BagRun, read_bag, summarize_decoding
from .report import Column, Report, Table, percentile, position_outcome_counts, verifier_description

REPORT_STEM = "bag_analysis"
# Where an action's time goes, innermost first: per-action values the policy node publishes.
LATENCY_FIELDS = (("draft_ms", "draft"), ("verify_ms", "verifier passes"), ("total_ms", "decode (draft + verifier)"),
                  ("policy_ms", "policy (preprocessing + decode)"),
                  ("image_to_action_ms", "image received -> action published"))

DECODING_COLUMNS = [
    Column("draft", "draft"), Column("acceptance", "acceptance"), Column("actions", "actions"),
    Column("acceptance_length", "acceptance length", ".2f"), Column("passes_per_action", "passes / action", ".2f"),
    Column("median_ms", "decode ms median", ".1f"), Column("p90_ms", "p90", ".1f"),
    Column("draft_ms", "draft ms mean", ".2f"), Column("verify_ms", "verify ms mean", ".1f"),
]
LATENCY_COLUMNS = [Column("stage", "stage"), Column("actions", "actions"), Column("median_ms", "median ms", ".2f"),
                   Column("p90_ms", "p90 ms", ".2f")]
TASK_COLUMNS = [Column("task_id", "task"), Column("instruction", "instruction"), Column("episodes", "episodes"),
                Column("success_rate", "success", ".0%"), Column("mean_steps", "steps", ".1f"),
                Column("mean_wall_seconds", "s / episode", ".2f"), Column("interrupted", "interrupted")]
EPISODE_COLUMNS = [Column("task_id", "task"), Column("episode", "episode"), Column("success", "success"),
                   Column("interrupted", "interrupted"), Column("steps", "steps"),
                   Column("wall_seconds", "seconds", ".2f"), Column("failure_reason", "failure reason")]


def decode_stats_objects(rows: list[dict]) -> list[DecodeStats]:
    """The bag's per-action dicts as DecodeStats (node counters and stamps dropped)."""
    names = {field.name for field in fields(DecodeStats)}
    return [DecodeStats(**{key: value for key, value in row.items() if key in names}) for row in rows]


def analyze(run: BagRun, figure_dir: Path) -> Report:
    if not (run.decode_stats or run.actions or run.episodes):
        raise ValueError(f"{run.path} has no usable decode_stats, action or episode messages "
                         f"(topics: {sorted(run.message_counts)})" + "".join(f"; {n}" for n in run.notices))
    verifiers = sorted({row["verifier"] for row in run.decode_stats if "verifier" in row})
    caption = (f"Bag {run.path}: {len(run.decode_stats)} decoded actions, {len(run.actions)} published actions, "
               f"{len(run.episodes)} episode result(s); verifier "
               f"{', '.join(map(verifier_description, verifiers)) or 'not named in the bag'}; "
               f"{draft_checkpoint_description(run.decode_stats)}; timings from the machine that ran the policy")
    groups: dict[str, list[tuple[int, dict]]] = {}     # "draft acceptance" -> (action index, stats)
    for index, row in enumerate(run.decode_stats):
        groups.setdefault(f"{row['draft']} {row['acceptance']}", []).append((index, row))

    tables = [Table("decoding", "Decoding per draft and acceptance rule, in order of use", DECODING_COLUMNS,
                    summarize_decoding(run.decode_stats)),
              Table("latency", "Where an action's time goes", LATENCY_COLUMNS, latency_rows(run.decode_stats))]
    if run.episodes:
        summary = summarize(run.episodes)
        tables += [Table("tasks", "Episode outcomes per task", TASK_COLUMNS,
                         summary["per_task"] + [{"task_id": "all", "instruction": "", **summary["overall"]}]),
                   Table("episodes", "Episodes", EPISODE_COLUMNS, run.episodes)]
    tables.append(Table("topics", "Messages per topic", [Column("topic", "topic"), Column("messages", "messages")],
                        [{"topic": topic, "messages": count} for topic, count in sorted(run.message_counts.items())]))

    figures = []
    if run.decode_stats:
        speculative = {label: decode_stats_objects([row for _, row in rows]) for label, rows in groups.items()
                       if rows[0][1]["draft"] != "none"}
        figures.append(plots.lines(figure_dir / "bag_decode_latency.png", "Decode time per action", "action", "ms",
                                   {f"{label} (n={len(rows)})": ([i for i, _ in rows],
                                                                 [row["total_ms"] for _, row in rows])
                                    for label, rows in groups.items()}, caption))
        figures.append(plots.ms_per_action(figure_dir / "bag_ms_per_action.png",
                                           [latency_row(label, [row for _, row in rows])
                                            for label, rows in groups.items()],
                                           "Preprocessing = policy_ms - total_ms (image conversion, preprocessing, "
                                           "action de-normalization) where the bag has policy_ms. " + caption))
        if speculative:
            figures += [
                plots.acceptance_length_histogram(figure_dir / "bag_acceptance_length_histogram.png",
                                                  {label: [s.verifier_passes for s in stats]
                                                   for label, stats in speculative.items()}, caption),
                plots.acceptance_by_position(figure_dir / "bag_acceptance_by_position.png",
                                             {label: position_outcome_counts(stats)
                                              for label, stats in speculative.items()}, caption,
                                             num_draft_tokens=inferred_num_draft_tokens(
                                                 [s for stats in speculative.values() for s in stats]))]
    if run.actions:
        boundaries, labels = episode_boundaries(run.episodes, len(run.actions))
        figures.append(plots.actions_plot(figure_dir / "bag_actions.png", run.actions, caption, boundaries, labels))
    return Report("Bag analysis", caption, tables, figures, notes=run.notices,
                  extra={"decode_stats": run.decode_stats, "recovered": run.recovery is not None,
                         "skipped_messages": {topic: count for topic, (count, _) in run.skipped.items()}})


def draft_checkpoint_description(decode_stats: list[dict]) -> str:
    """The draft checkpoint(s) the policy used, if its decode_stats name them ('draft_checkpoint': the
    directory a head loaded from, '' for the history draft, which has none)."""
    checkpoints = sorted({f"{row['draft']}={row['draft_checkpoint']}" if row["draft_checkpoint"] else row["draft"]
                          for row in decode_stats
                          if row.get("draft", "none") != "none" and "draft_checkpoint" in row})
    if checkpoints:
        return "draft checkpoint " + ", ".join(checkpoints)
    if any(row.get("draft", "none") != "none" for row in decode_stats):
        return "draft checkpoint not named in the bag (its decode_stats carry no draft_checkpoint)"
    return "no draft (autoregressive)"


def latency_row(label: str, rows: list[dict]) -> plots.LatencyRow:
    """Mean ms per action by stage; preprocessing from policy_ms - total_ms where every row has it."""
    count = len(rows)

    def mean(key):
        return sum(row[key] for row in rows) / count if count else 0.0

    measured = count and all("policy_ms" in row for row in rows)
    preprocessing = max(0.0, mean("policy_ms") - mean("total_ms")) if measured else None
    return plots.LatencyRow(label, count, mean("draft_ms"), mean("verify_ms"), mean("total_ms"), preprocessing)


def inferred_num_draft_tokens(stats: list[DecodeStats]) -> int | None:
    """k, read back as the most proposals in any pass after the first (the first, the prefill,
    may judge early guesses beyond k); None when no action had a second pass."""
    later = [proposed for action in stats for proposed in action.proposed_per_pass[1:]]
    return max(later) if later else None


def episode_boundaries(episodes: list[dict], actions: int) -> tuple[list[int], list[str]]:
    """Action index after each episode's last action (one action per step) and its label."""
    boundaries, labels, end = [], [], 0
    for episode in episodes:
        end += int(episode.get("steps", 0))
        if 0 < end <= actions:
            boundaries.append(end)
            labels.append(f"task {episode['task_id']} ep {episode['episode']} ends")
    return boundaries, labels


def latency_rows(decode_stats: list[dict]) -> list[dict]:
    rows = []
    for key, stage in LATENCY_FIELDS:
        values = [row[key] for row in decode_stats if key in row]
        if values:
            rows.append({"stage": stage, "field": key, "actions": len(values), "median_ms": percentile(values, 50),
                         "p90_ms": percentile(values, 90)})
    return rows


def main(argv=None) -> int:
    parser = ArgumentParser(prog="spec-vla-analyze", description=__doc__)
    parser.add_argument("bag", type=Path, help="bag directory (rosbag2, MCAP or SQLite)")
    parser.add_argument("--output", type=Path, help="report directory (default: <bag>_analysis)")
    args = parser.parse_args(argv)
    output = args.output or args.bag.with_name(args.bag.name + "_analysis")
    try:
        run = read_bag(args.bag)
        for notice in run.notices:
            print(f"spec-vla-analyze: {notice}", file=sys.stderr)
        report = analyze(run, output)
    except (ValueError, OSError, AnyReaderError) as error:
        return fail("spec-vla-analyze", error)
    report.write(output, REPORT_STEM)
    print(report.markdown(output))
    print(f"\nreport: {output / (REPORT_STEM + '.md')} (+ .json, .csv, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
