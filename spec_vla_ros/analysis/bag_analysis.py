"""`spec-vla-analyze BAG`: decode statistics, actions and episode outcomes of a recorded run.

Reads bags written by the package's recorder, or by `ros2 bag record -s mcap` with the same
topics (remapped or namespaced names included), through `bags.read_bag`; prints a Markdown
report and writes it, with its JSON, CSVs and plots, next to the bag. Timings are those of the
machine that ran the policy, which the bag does not name.

A bag whose recorder was killed (no metadata.yaml or MCAP summary; split files plain or
zstd-compressed by `--compression-mode file`) is analysed from what reached the disk, with a
one-line "recovered N messages from an unfinished bag" notice; `spec-vla-bag-reindex BAG` writes a
complete copy. Messages the analysis cannot use are skipped with a count.
"""
from __future__ import annotations

from pathlib import Path

from sim_bridge.results import summarize

from ..ros.decode_report import DecodeReport
from ..decoding.stats import DecodeStats
from . import plots
from .bags import BagRun, decoding_label, summarize_decoding
from .report import TREE_COLUMNS, Column, Report, Table, percentile, position_outcome_counts, verifier_description

REPORT_STEM = "bag_analysis"
# Where an action's time goes, innermost first: per-action values the policy node publishes
# (the first three are DecodeStats', the others the node's).
LATENCY_FIELDS = (("draft_ms", "draft"), ("verify_ms", "verifier passes"), ("total_ms", "decode (draft + verifier)"),
                  ("policy_ms", "policy (preprocessing + decode)"),
                  ("image_to_action_ms", "image received -> action published"))

DECODING_COLUMNS = [
    Column("draft", "draft"), Column("acceptance", "acceptance"), Column("shape", "shape"),
    Column("actions", "actions"), Column("acceptance_length", "acceptance length", ".2f"),
    Column("passes_per_action", "passes / action", ".2f"), *TREE_COLUMNS,
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


_STATS_TIMINGS = ("draft_ms", "verify_ms", "total_ms")


def latency_ms(report: DecodeReport, key: str) -> float | None:
    """One of LATENCY_FIELDS' values of a report, in ms; None where the bag does not have it."""
    return getattr(report.stats, key) if key in _STATS_TIMINGS else getattr(report, key)


def analyze(run: BagRun, figure_dir: Path) -> Report:
    if not (run.decode_stats or run.actions or run.episodes):
        raise ValueError(f"{run.path} has no usable decode_stats, action or episode messages "
                         f"(topics: {sorted(run.message_counts)})" + "".join(f"; {n}" for n in run.notices))
    verifiers = sorted({report.verifier for report in run.decode_stats if report.verifier is not None})
    caption = (f"Bag {run.path}: {len(run.decode_stats)} decoded actions, {len(run.actions)} published actions, "
               f"{len(run.episodes)} episode result(s); verifier "
               f"{', '.join(map(verifier_description, verifiers)) or 'not named in the bag'}; "
               f"{draft_checkpoint_description(run.decode_stats)}; timings from the machine that ran the policy")
    groups: dict[str, list[tuple[int, DecodeReport]]] = {}     # decoding_label -> (action index, report)
    for index, report in enumerate(run.decode_stats):
        groups.setdefault(decoding_label(report.stats), []).append((index, report))

    tables = [Table("decoding", "Decoding per draft, acceptance rule and shape, in order of use", DECODING_COLUMNS,
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
        speculative = {label: [report.stats for _, report in rows] for label, rows in groups.items()
                       if not rows[0][1].autoregressive}
        figures.append(plots.lines(figure_dir / "bag_decode_latency.png", "Decode time per action", "action", "ms",
                                   {f"{label} (n={len(rows)})": ([i for i, _ in rows],
                                                                 [report.stats.total_ms for _, report in rows])
                                    for label, rows in groups.items()}, caption))
        figures.append(plots.ms_per_action(figure_dir / "bag_ms_per_action.png",
                                           [latency_row(label, [report for _, report in rows])
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
    # Per action: the key-values as published, the source image's stamp and the receive time (ns).
    decode_stats = [{**report.values(), "image_stamp_ns": image_stamp_ns, "received_ns": received_ns}
                    for report, (image_stamp_ns, received_ns) in zip(run.decode_stats, run.decode_stamps)]
    return Report("Bag analysis", caption, tables, figures, notes=run.notices,
                  extra={"decode_stats": decode_stats, "recovered": run.recovery is not None,
                         "skipped_messages": {topic: count for topic, (count, _) in run.skipped.items()}})


def draft_checkpoint_description(reports: list[DecodeReport]) -> str:
    """The draft checkpoint(s) the policy used, if its decode_stats name them ('draft_checkpoint': the
    directory a head loaded from, '' for the history draft, which has none)."""
    drafted = [report for report in reports if not report.autoregressive]
    checkpoints = sorted({f"{report.stats.draft}={report.stats.draft_checkpoint}" if report.stats.draft_checkpoint
                          else report.stats.draft
                          for report in drafted if "draft_checkpoint" not in report.missing})
    if checkpoints:
        return "draft checkpoint " + ", ".join(checkpoints)
    if drafted:
        return "draft checkpoint not named in the bag (its decode_stats carry no draft_checkpoint)"
    return "no draft (autoregressive)"


def latency_row(label: str, reports: list[DecodeReport]) -> plots.LatencyRow:
    """Mean ms per action by stage; preprocessing from policy_ms - total_ms where every report has it."""
    count = len(reports)

    def mean(key):
        return sum(latency_ms(report, key) for report in reports) / count if count else 0.0

    measured = count and all(report.policy_ms is not None for report in reports)
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


def latency_rows(reports: list[DecodeReport]) -> list[dict]:
    rows = []
    for key, stage in LATENCY_FIELDS:
        values = [value for value in (latency_ms(report, key) for report in reports) if value is not None]
        if values:
            rows.append({"stage": stage, "field": key, "actions": len(values), "median_ms": percentile(values, 50),
                         "p90_ms": percentile(values, 90)})
    return rows
