"""`spec-vla-eval`: autoregressive vs speculative decoding on LIBERO-GOAL, in one process.

Every configuration (`ar`, `mamba`, `llama`, `history`, each optionally `:RULE[:T]` with RULE
`strict`, `relaxed` = Spec-VLA's exact rule or `relaxed-guarded`) drives one loaded verifier on
the same tasks and fixed initial states. Configurations take turns episode by episode, so
drifting machine load hits all of them alike, and speedups are ratios measured in the same run.
Beside "same actions as AR" the report gives AR's own noise floor: how often greedy decoding
reproduces its actions when only the shapes of its verifier passes change (each pass one
position longer; computed after each AR episode on its observations, outside the timed decode). Each finished episode is appended to `episodes.jsonl` in the output
directory; rerunning the same command skips the episodes already there, so a killed run
continues where it stopped and no episode is counted twice.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sim_bridge import libero_goal
from sim_bridge.libero_goal import LiberoGoalEnv
from sim_bridge.results import summarize

from ..decoding.acceptance import GUARDED_RULE, RELAXED_RULE, RULE_DESCRIPTIONS, STRICT
from ..decoding.noise_floor import reshaped_ar_decoder
from ..decoding.spec import DecoderSpec
from ..decoding.stats import DecodeStats
from ..drafts.kinds import AR
from ..drafts.registry import resolve
from ..policy import VLAPolicy
from ..vla.action_tokenizer import token_ids_to_actions
from ..vla.constants import ACTION_DIM
from ..vla.miniature import MINIATURE
from . import plots
from .published import PUBLISHED_LIBERO_GOAL_RESULTS
from .report import Column, Report, Table, draft_train_accuracy, percentile, position_outcome_counts, provenance

EPISODES_FILE = "episodes.jsonl"
SETTINGS_FILE = "settings.json"
REPORT_STEM = "eval"


# --- running episodes ----------------------------------------------------------------------

def run_episode(env: LiberoGoalEnv, policy: VLAPolicy, task_id: int, episode: int,
                noise_floor: bool = False) -> dict:
    """One episode with the policy's current decoder: the env's result record plus the decode
    statistics of every action. With `noise_floor` (AR episodes), each observation is decoded
    again after the episode, untimed, by AR with reshaped passes (`step_reshaped_same`)."""
    policy.reset_episode()
    observed, actions = [], []

    def act(image, instruction):
        observed.append((image, instruction))
        action, stats = policy.act(image, instruction)
        actions.append(action)
        return action, stats

    record, step_stats, _ = libero_goal.run_episode(env, act, task_id, episode)
    record = {**record, **episode_decode_record(step_stats), "step_actions": rounded(actions)}
    if noise_floor:
        probe = reshaped_ar_decoder(policy.verifier.model)
        record["step_reshaped_same"] = [policy.decode(image, instruction, probe)[0] == stats.tokens
                                        for (image, instruction), stats in zip(observed, step_stats)]
    spec = policy.config.spec
    if spec.speculative and spec.acceptance != STRICT:
        record["step_ar_actions"] = rounded(ar_actions(policy, observed))
    return record


def ar_actions(policy: VLAPolicy, observed: list[tuple]) -> list:
    """AR's actions on the observations a (relaxed) configuration acted on, decoded after the
    episode, untimed: the reference of the deviation plot."""
    reference = policy.build_decoder(policy.config.replace(draft=AR, acceptance=STRICT.rule))
    return [policy.norm_stats.unnormalize(token_ids_to_actions(policy.decode(image, instruction, reference)[0]))
            for image, instruction in observed]


def rounded(actions: list) -> list[list[float]]:
    """Actions as JSON lists, to 6 decimals (the log's precision)."""
    return [[round(float(value), 6) for value in action] for action in actions]


def episode_decode_record(step_stats: list[DecodeStats]) -> dict:
    """Per-step tokens, passes and decode time, and acceptance counts by draft position."""
    accepted, judged = position_outcome_counts(step_stats)
    return {"actions": len(step_stats),
            "step_tokens": [stats.tokens for stats in step_stats],
            "step_passes": [stats.verifier_passes for stats in step_stats],
            "step_decode_ms": [round(stats.total_ms, 3) for stats in step_stats],
            "eos_actions": sum(stats.stopped_at_eos for stats in step_stats),
            "draft_ms": sum(stats.draft_ms for stats in step_stats),
            "verify_ms": sum(stats.verify_ms for stats in step_stats),
            "position_accepted": accepted, "position_judged": judged}


class EpisodeLog:
    """`episodes.jsonl`: one line per finished episode, appended and synced as it finishes.

    A kill can leave a half-written last line; it is cut off on open, so later appends start on a
    clean line. Records are keyed by (configuration, task_id, episode); the first one counts.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[tuple, dict] = {}
        if not self.path.exists():
            return
        text = self.path.read_text()
        complete = text[:text.rfind("\n") + 1]
        if complete != text:
            with self.path.open("r+") as stream:
                stream.truncate(len(complete.encode()))
        for number, line in enumerate(complete.splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number} is not a JSON record ({error}); "
                                 "fix or delete that line to resume") from None
            self.records.setdefault(self.key(record), record)

    @staticmethod
    def key(record: dict) -> tuple:
        return record["configuration"], record["task_id"], record["episode"]

    def append(self, record: dict) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self.records.setdefault(self.key(record), record)


def run_settings(env: LiberoGoalEnv, policy: VLAPolicy, checkpoints: dict[str, str]) -> dict:
    """What must not change between the runs that share one output directory."""
    config = policy.config
    return {"verifier": config.verifier, "verifier_name": policy.verifier.name, "device": config.device,
            "dtype": str(policy.verifier.dtype).removeprefix("torch."), "unnorm_key": config.unnorm_key,
            "center_crop": config.center_crop, "num_draft_tokens": config.num_draft_tokens,
            "draft_checkpoints": dict(sorted(checkpoints.items())), "max_steps": env.max_steps,
            "num_steps_wait": env.num_steps_wait, "image_size": env.image_size, "seed": env.seed,
            "seeding": env.seeding, "torch_threads": torch.get_num_threads()}


def check_settings(output_dir: Path, settings: dict) -> None:
    """Record the settings of a new run, or refuse to resume a run made with other ones."""
    path = output_dir / SETTINGS_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        changed = {key: (recorded.get(key), value) for key, value in settings.items() if recorded.get(key) != value}
        if changed:
            details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise ValueError(f"{output_dir} holds episodes run with other settings ({details}); "
                             "choose another --output or delete that directory")
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n")


def run_evaluation(env: LiberoGoalEnv, policy: VLAPolicy, configurations: list[DecoderSpec],
                   task_ids: list[int], episodes_per_task: int, output_dir: str | Path,
                   checkpoints: dict[str, str] | None = None, progress: bool = True) -> Report:
    """Run every (task, episode, configuration) missing from the output directory's log, then
    write and return the report over exactly the requested ones. The log's records are keyed by
    `DecoderSpec.name` (`ar`, `mamba`, `mamba:relaxed:9`, ...), as in earlier runs, so an older
    output directory resumes as it is. `checkpoints`: {draft kind: directory} as given on the
    command line, recorded in the settings (each spec carries its own draft_checkpoint)."""
    output_dir, checkpoints = Path(output_dir), checkpoints or {}
    names = [configuration.name for configuration in configurations]
    if len(set(names)) != len(names):
        raise ValueError(f"configurations repeat: {names}")
    base = policy.config
    check_settings(output_dir, run_settings(env, policy, checkpoints))
    log = EpisodeLog(output_dir / EPISODES_FILE)
    schedule = [(task_id, episode, configuration)
                for task_id, episode in env.episode_schedule(task_ids, episodes_per_task)
                for configuration in configurations]
    pending = [item for item in schedule if (item[2].name, item[0], item[1]) not in log.records]
    if len(pending) < len(schedule):
        print(f"resuming {output_dir}: {len(schedule) - len(pending)} of {len(schedule)} episodes found in "
              f"{EPISODES_FILE}, {len(pending)} to run", flush=True)
    decoders = {configuration.name: policy.build_decoder(base.with_spec(configuration))
                for configuration in {item[2] for item in pending}}
    original = policy.decoder
    try:
        bar = tqdm(pending, unit="episode", disable=not progress, desc="spec-vla-eval",
                   initial=len(schedule) - len(pending), total=len(schedule))
        for task_id, episode, configuration in bar:
            bar.set_description(f"{configuration.name} task {task_id} episode {episode}")
            policy.set_decoder(decoders[configuration.name], base.with_spec(configuration))
            record = run_episode(env, policy, task_id, episode, noise_floor=not configuration.speculative)
            log.append({"configuration": configuration.name, **record})
            bar.set_postfix(seconds=f"{record['wall_seconds']:.1f}", success=record["success"])
    finally:
        policy.set_decoder(original, base)
    records = [log.records[(configuration.name, task_id, episode)] for task_id, episode, configuration in schedule]
    settings = json.loads((output_dir / SETTINGS_FILE).read_text())
    report = build_report(records, configurations, settings, output_dir)
    report.write(output_dir, REPORT_STEM)
    return report


# --- the report ----------------------------------------------------------------------------

def decode_summary(records: list[dict]) -> dict:
    """Acceptance length (tokens per verifier pass), passes and decode ms per action."""
    actions = sum(record["actions"] for record in records)
    passes = sum(sum(record["step_passes"]) for record in records)
    decode_ms = [ms for record in records for ms in record["step_decode_ms"]]
    return {"actions": actions,
            "acceptance_length": ACTION_DIM * actions / passes if passes else None,
            "passes_per_action": passes / actions if actions else None,
            "ms_per_action": statistics.fmean(decode_ms) if decode_ms else None,
            "ms_per_action_median": percentile(decode_ms, 50),
            "ms_per_action_p90": percentile(decode_ms, 90),
            "draft_ms_per_action": sum(r["draft_ms"] for r in records) / actions if actions else None,
            "verify_ms_per_action": sum(r["verify_ms"] for r in records) / actions if actions else None,
            "eos_actions": sum(r.get("eos_actions", 0) for r in records)}


def noise_floor(records: list[dict]) -> dict:
    """AR's agreement with itself under reshaped passes: share of actions, and of episodes
    whose every action agrees (comparable with 'same actions as AR', which counts episodes)."""
    checked = [r["step_reshaped_same"] for r in records if "step_reshaped_same" in r]
    steps = [same for episode in checked for same in episode]
    return {"noise_floor_actions": sum(steps) / len(steps) if steps else None,
            "noise_floor_episodes": sum(map(all, checked)) / len(checked) if checked else None}


def episode_summary(records: list[dict]) -> dict:
    """The results files' summary (success, steps, seconds) plus the spread of seconds per episode."""
    overall = summarize(records)["overall"]
    seconds = [record["wall_seconds"] for record in records]
    return {"episodes": overall["episodes"], "successes": overall["successes"],
            "success_rate": overall["success_rate"], "mean_steps": overall["mean_steps"],
            "mean_episode_s": overall["mean_wall_seconds"],
            "std_episode_s": statistics.stdev(seconds) if len(seconds) > 1 else None,
            "rejected_actions": overall["rejected_actions"]}


def same_actions(records: list[dict], reference: list[dict]) -> float | None:
    """Share of episodes whose action tokens equal the reference's on the same task and initial state."""
    tokens = {(r["task_id"], r["episode"]): r["step_tokens"] for r in reference}
    pairs = [(r["step_tokens"], tokens[(r["task_id"], r["episode"])]) for r in records
             if (r["task_id"], r["episode"]) in tokens]
    return sum(mine == theirs for mine, theirs in pairs) / len(pairs) if pairs else None


def ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def group_row(records: list[dict], reference: list[dict] | None) -> dict:
    """One table row; speedups and action agreement are against the reference (AR) records of the
    same tasks and episodes, from this run."""
    row = {**episode_summary(records), **decode_summary(records)}
    if records and records[0]["configuration"] == AR:
        row.update(noise_floor(records))
    if reference:
        ar = {**episode_summary(reference), **decode_summary(reference)}
        row.update(speedup_episode=ratio(ar["mean_episode_s"], row["mean_episode_s"]),
                   speedup_action=ratio(ar["ms_per_action"], row["ms_per_action"]),
                   same_actions_as_ar=same_actions(records, reference))
    return row


def build_report(records: list[dict], configurations: list[DecoderSpec], settings: dict,
                 figure_dir: Path) -> Report:
    by_configuration = {c.name: [r for r in records if r["configuration"] == c.name] for c in configurations}
    reference = by_configuration.get(AR)
    task_ids = sorted({record["task_id"] for record in records})
    episodes_per_task = max(len({r["episode"] for r in records if r["task_id"] == t}) for t in task_ids)
    caption = provenance(settings["verifier_name"], settings["device"], settings["dtype"],
                         f"LIBERO-GOAL in-process, {len(task_ids)} task(s) x {episodes_per_task} episode(s), "
                         f"max_steps {settings['max_steps']}, {settings['image_size']} px renders, "
                         f"seeding {settings.get('seeding', 'per_episode')}, "
                         f"num_draft_tokens {settings['num_draft_tokens']}, "
                         f"drafts: {draft_checkpoint_description(settings)}", threads=settings.get("torch_threads"))

    overall, per_task, positions = [], [], []
    for configuration in configurations:
        rows = by_configuration[configuration.name]
        overall.append({"configuration": configuration.name, "draft": configuration.draft,
                        "acceptance": configuration.acceptance.name,
                        "draft_train_accuracy": draft_train_accuracy(resolve(
                            configuration.draft, settings["draft_checkpoints"].get(configuration.draft, ""),
                            settings["verifier_name"]).config),
                        **group_row(rows, reference)})
        for task_id in task_ids:
            task_rows = [r for r in rows if r["task_id"] == task_id]
            task_reference = reference and [r for r in reference if r["task_id"] == task_id]
            per_task.append({"task_id": task_id, "instruction": task_rows[0]["instruction"],
                             "configuration": configuration.name, **group_row(task_rows, task_reference)})
        if configuration.speculative:
            accepted, judged = summed_position_counts(rows)
            positions.append({"configuration": configuration.name, "accepted": accepted, "judged": judged,
                              **{f"position_{i + 1}": ratio(accepted[i], judged[i]) for i in range(ACTION_DIM)}})

    figures = eval_figures(by_configuration, configurations, task_ids, positions, settings, caption, figure_dir)
    tables = [
        Table("configurations", "Per configuration", CONFIGURATION_COLUMNS, overall,
              note="Speedups and 'same actions as AR' (share of episodes whose every action equals AR's) compare "
                   "with the AR episodes of this run (same tasks and initial states). AR's noise floor (row ar): "
                   "the share of AR episodes (actions) that AR reproduces when only the shapes of its verifier "
                   "passes change (one position longer); strict configurations are expected near it, not at 100 %, where the "
                   "verifier has near-tied argmaxes. Acceptance length = tokens per verifier pass (AR = 1). "
                   "EOS stops: actions the verifier ended with an EOS (read from prompt + output, as OpenVLA). "
                   "Decode ms excludes image preprocessing and the simulator; seconds per episode include both. "
                   f"Acceptance rules: relaxed = {RULE_DESCRIPTIONS[RELAXED_RULE]}; relaxed-guarded = "
                   f"{RULE_DESCRIPTIONS[GUARDED_RULE]}."),
        Table("tasks", "Per task", TASK_COLUMNS, per_task),
        Table("positions", "Acceptance by draft position (accepted / judged proposals)", POSITION_COLUMNS, positions),
        Table("published", "Published results (not measured here)", PUBLISHED_COLUMNS,
              [dict(row) for row in PUBLISHED_LIBERO_GOAL_RESULTS],
              note="Measured by the sources with the real OpenVLA-7B on their own hardware; '–' = not reported "
                   "(hardware included). Compare ratios (speedup, acceptance length), not absolute seconds."),
    ]
    return Report("LIBERO-GOAL: autoregressive vs speculative decoding", caption, tables, figures,
                  extra={"settings": settings, "configurations": [c.name for c in configurations]})


# The eval's figures, in the order the report shows them (README: "Evaluation plots").
FIGURE_FILES = {
    "speedup": "eval_speedup.png",                       # decode and episode speedup vs AR, passes per action
    "ms_per_action": "eval_ms_per_action.png",           # stacked: preprocessing (not measured here), draft, verify
    "success_rate": "eval_success_rate.png",             # per task and configuration, Wilson intervals
    "acceptance_by_position": "eval_acceptance_by_position.png",
    "acceptance_length": "eval_acceptance_length_histogram.png",
    "action_deviation": "eval_relaxed_action_deviation.png",   # only with relaxed configurations
    "step_latency": "eval_step_latency.png",
}


def paired_units(records: list[dict], reference: list[dict], total) -> tuple[list, list]:
    """(total, count) per episode for the reference (AR) and the configuration, paired by task and
    initial state; `total(record)` gives an episode's (total, count)."""
    mine = {(r["task_id"], r["episode"]): r for r in records}
    pairs = [(total(r), total(mine[(r["task_id"], r["episode"])])) for r in reference
             if (r["task_id"], r["episode"]) in mine]
    return [a for a, _ in pairs], [b for _, b in pairs]


def speedup_rows(by_configuration: dict[str, list[dict]]) -> list[plots.SpeedupRow]:
    """Bootstrap over episodes (paired with AR's on the same task and initial state)."""
    reference = by_configuration.get(AR)
    rows = []
    for name, records in by_configuration.items():
        def decode(r):
            return sum(r["step_decode_ms"]), r["actions"]

        def seconds(r):
            return r["wall_seconds"], 1.0

        passes = plots.ratio_of_means_interval([(sum(r["step_passes"]), r["actions"]) for r in records],
                                               [(1.0, 1.0)] * len(records))
        if reference:
            decode_speedup = plots.ratio_of_means_interval(*paired_units(records, reference, decode))
            episode_speedup = plots.ratio_of_means_interval(*paired_units(records, reference, seconds))
        else:
            decode_speedup = episode_speedup = plots.Interval(float("nan"), float("nan"), float("nan"), 0)
        rows.append(plots.SpeedupRow(name, decode_speedup, episode_speedup, passes))
    return rows


def eval_figures(by_configuration: dict[str, list[dict]], configurations: list[DecoderSpec], task_ids: list[int],
                 positions: list[dict], settings: dict, caption: str, figure_dir: Path) -> list[Path]:
    files = {key: Path(figure_dir) / name for key, name in FIGURE_FILES.items()}
    figures = []
    if AR in by_configuration:
        figures.append(plots.speedup(files["speedup"], speedup_rows(by_configuration), caption))
    summaries = {name: decode_summary(records) for name, records in by_configuration.items()}
    figures.append(plots.ms_per_action(files["ms_per_action"], [
        plots.LatencyRow(name, summary["actions"], summary["draft_ms_per_action"] or 0.0,
                         summary["verify_ms_per_action"] or 0.0, summary["ms_per_action"] or 0.0, None)
        for name, summary in summaries.items()],
        "Preprocessing (image -> pixel values) is not measured by spec-vla-eval (spec-vla-analyze of a bag "
        "measures it). " + caption))
    outcomes = {name: [(sum(r["success"] for r in records if r["task_id"] == t),
                        sum(r["task_id"] == t for r in records)) for t in task_ids]
                + [(sum(r["success"] for r in records), len(records))] for name, records in by_configuration.items()}
    figures.append(plots.success_rate(files["success_rate"], [f"task {t}" for t in task_ids] + ["all"], outcomes,
                                      caption))
    if positions:
        figures += [
            plots.acceptance_by_position(files["acceptance_by_position"],
                                         {row["configuration"]: (row["accepted"], row["judged"]) for row in positions},
                                         caption, num_draft_tokens=settings["num_draft_tokens"]),
            plots.acceptance_length_histogram(
                files["acceptance_length"],
                {row["configuration"]: [p for r in by_configuration[row["configuration"]] for p in r["step_passes"]]
                 for row in positions}, caption)]
    deviations = {name: np.array([np.subtract(mine, ar) for r in records
                                  for mine, ar in zip(r["step_actions"], r["step_ar_actions"])]).reshape(-1, ACTION_DIM)
                  for name, records in by_configuration.items()
                  if records and all("step_ar_actions" in r for r in records)}
    if deviations:
        figures.append(plots.action_deviation(files["action_deviation"], deviations, caption))
    first = next(iter(by_configuration.values()))[0]   # the first (task, episode), run by every configuration
    figures.append(plots.lines(
        files["step_latency"], f"Decode time per action over task {first['task_id']} episode {first['episode']} "
                               "(one episode per configuration)", "step", "ms",
        {name: (range(len(rows[0]["step_decode_ms"])), rows[0]["step_decode_ms"])
         for name, rows in by_configuration.items()}, caption))
    return figures


def summed_position_counts(records: list[dict]) -> tuple[list[int], list[int]]:
    accepted, judged = [0] * ACTION_DIM, [0] * ACTION_DIM
    for record in records:
        for i in range(ACTION_DIM):
            accepted[i] += record["position_accepted"][i]
            judged[i] += record["position_judged"][i]
    return accepted, judged


def draft_checkpoint_description(settings: dict) -> str:
    explicit = settings["draft_checkpoints"]
    return ", ".join(f"{name}={path}" for name, path in explicit.items()) if explicit else \
        "packaged checkpoints (trained for the miniature)" if settings["verifier"] == MINIATURE else "packaged"


CONFIGURATION_COLUMNS = [
    Column("configuration", "configuration"), Column("draft_train_accuracy", "draft train acc", ".2%"),
    Column("episodes", "episodes"), Column("success_rate", "success", ".0%"),
    Column("mean_episode_s", "s / episode", ".2f"), Column("std_episode_s", "std s", ".2f"),
    Column("speedup_episode", "speedup (episode)", ".2f"), Column("acceptance_length", "acceptance length", ".2f"),
    Column("passes_per_action", "passes / action", ".2f"), Column("ms_per_action", "decode ms / action", ".1f"),
    Column("ms_per_action_median", "median", ".1f"), Column("ms_per_action_p90", "p90", ".1f"),
    Column("speedup_action", "speedup (decode)", ".2f"), Column("same_actions_as_ar", "same actions as AR", ".0%"),
    Column("noise_floor_episodes", "AR noise floor (episodes)", ".0%"),
    Column("noise_floor_actions", "AR noise floor (actions)", ".1%"), Column("eos_actions", "EOS stops"),
]
TASK_COLUMNS = [
    Column("task_id", "task"), Column("configuration", "configuration"), Column("episodes", "episodes"),
    Column("success_rate", "success", ".0%"), Column("mean_episode_s", "s / episode", ".2f"),
    Column("std_episode_s", "std s", ".2f"), Column("speedup_episode", "speedup (episode)", ".2f"),
    Column("acceptance_length", "acceptance length", ".2f"), Column("passes_per_action", "passes / action", ".2f"),
    Column("ms_per_action", "decode ms / action", ".1f"), Column("speedup_action", "speedup (decode)", ".2f"),
]
POSITION_COLUMNS = [Column("configuration", "configuration")] + [
    Column(f"position_{i + 1}", str(i + 1), ".0%") for i in range(ACTION_DIM)]
PUBLISHED_COLUMNS = [
    Column("source", "source"), Column("hardware", "hardware"), Column("configuration", "configuration"),
    Column("draft_train_accuracy", "draft train acc", ".2%"), Column("success_rate", "success", ".1%"),
    Column("mean_episode_s", "s / episode", ".2f"), Column("std_episode_s", "std s", ".2f"),
    Column("speedup", "speedup", ".2f"), Column("acceptance_length", "acceptance length", ".2f"),
]
