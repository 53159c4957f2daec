"""`spec-vla-harness`: benchmark draft models offline, without the simulator or ROS nodes.

The verifier's greedy outputs are recorded once (traces from `spec-vla-collect`, or computed
here from the images and instructions of a bag) and replayed: a `ReplaySession` stands in for
the verifier's `VerifierSession`, so the real `Decoder` loop runs unchanged around any draft.
Per draft, acceptance rule and shape (a chain of `num_draft_tokens`, or a tree of `--trees`):
acceptance length, verifier passes per action, acceptance by draft position (by depth for a
tree), for trees the mean accepted depth and which branch the kept paths came from (model,
history, retrieval), teacher-forced token accuracy per action dimension and draft milliseconds
per proposed token.

Strict acceptance replays exactly: every accepted prefix is the greedy one, whose verifier
outputs are recorded (for a tree node, the recorded output at its depth is served, which is the
verifier's own wherever the node's path is the greedy prefix, the only nodes strict keeps). Relaxed acceptance is an approximation: after a kept-but-different draft
token the real verifier would continue from another prefix, whose outputs are not recorded;
the replay serves the recorded greedy continuation instead.

The verifier is the one the recording names unless `--verifier` says otherwise: the traces'
manifest records where their verifier is, and a bag's decode statistics record the verifier the
policy ran. A `--verifier` whose name differs from the recorded one is refused (traces hold that
verifier's features; a bag's frames are decoded here only with `--ignore-recorded-verifier`).
Drafts left at their default skip `mamba` and `llama` when no checkpoint is given for a verifier
other than the miniature (the packaged ones fit only the miniature). Paths are taken relative to
the caller's directory. Expected failures end with one line on stderr and exit status 2.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from rosbags.highlevel import AnyReaderError
from tqdm import tqdm

from ..decoding.acceptance import Acceptance
from ..decoding.decoder import Decoder, until_eos
from ..decoding.stats import DecodeStats, tree_statistics
from ..drafts.base import Draft
from ..drafts.tree import TreeShape
from ..training.arguments import CommandError, absolute_path
from ..training.collect import Trace, read_manifest, read_traces, recorded_verifier_location, trace_action
from ..vla.checkpoint import LoadedVerifier
from ..vla.constants import ACTION_DIM, ACTION_NAMES, EOS_TOKEN_ID
from ..vla.miniature import MINIATURE, MINIATURE_NAME
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.session import VerifierStep
from ..vla.token_tree import tree_depths
from . import plots
from .bags import observation_episodes, read_bag
from .report import TREE_COLUMNS, Column, Report, Table, position_outcome_counts

REPORT_STEM = "harness"


class ReplayStep(VerifierStep):
    """A verifier pass whose greedy tokens are the recorded ones. The Decoder reads only
    `greedy()`, so no [k, vocab] logits are materialized."""

    def __init__(self, hidden: torch.Tensor, input_embeds: torch.Tensor, tokens: list[int]):
        self.hidden, self.input_embeds, self.tokens = hidden, input_embeds, list(tokens)
        self._logits, self.lm_head_weight, self.num_logits = None, None, len(self.tokens)

    @property
    def logits(self) -> torch.Tensor:
        raise AttributeError("a replayed verifier pass has only its greedy tokens, no logits")

    def greedy(self, start: int = 0, stop: int | None = None) -> list[int]:
        return self.tokens[start:stop]

    def greedy_rows(self, rows: list[int]) -> list[int]:
        return [self.tokens[row] for row in rows]


class ReplaySession:
    """Serves one recorded greedy action as if the verifier computed it (the VerifierSession API).

    Cache positions are the prompt's P positions, then the action tokens fed so far. The greedy
    token at the last prompt position is recorded token 0, at the position holding the j-th fed
    token recorded token j + 1; hidden states are the recorded ones at those positions. The
    recording ends with the hidden state of the sixth action token: the seventh token's (only
    reached when a draft proposes the whole action before the prefill) is served as zeros.
    A tree node is served what the position at its depth holds (`verify_tree`, `keep_path`).
    """

    def __init__(self, trace: Trace, model):
        self.trace, self.model = trace, model
        self.fed: list[int] = []
        self.passes = 0
        self.prefilled = False
        self.tree = None                 # after a tree pass: (prefix length, the nodes' tokens and parents)

    @property
    def length(self) -> int:
        return self.trace.prompt_length + len(self.fed) if self.prefilled else 0

    def prefill(self, pixel_values, prompt_ids, proposals=(), parents=None) -> ReplayStep:
        self.prefilled, self.fed, self.tree = True, [], None
        prompt_length, proposals = self.trace.prompt_length, list(proposals)
        embeds = self.trace.input_embeds
        if proposals:
            embeds = torch.cat([embeds, self._embed(proposals)])
        if parents is not None:                   # a tree hanging from the prompt's last position
            self.tree = (prompt_length, proposals, list(parents))
            at = [prompt_length + depth for depth in tree_depths(parents)]
            return self._step(list(range(prompt_length)) + at, [prompt_length - 1] + at, embeds)
        self.fed = proposals
        return self._step(list(range(self.length)), list(range(prompt_length - 1, self.length)), embeds)

    def extend(self, token_ids: list[int]) -> ReplayStep:
        if not self.prefilled:
            raise RuntimeError("extend() before prefill()")
        self.tree = None
        positions = list(range(self.length, self.length + len(token_ids)))
        self.fed += token_ids
        return self._step(positions, positions, self._embed(token_ids))

    def verify_tree(self, token_ids: list[int], parents: list[int]) -> ReplayStep:
        if not self.prefilled:
            raise RuntimeError("verify_tree() before prefill()")
        self.tree = (self.length, list(token_ids), list(parents))
        at = [self.length + depth for depth in tree_depths(parents)]
        return self._step(at, at, self._embed(list(token_ids)))

    def keep_path(self, path: list[int]) -> None:
        """Keep the tree pass's nodes `path` (root first) after the prefix, as VerifierSession does."""
        if self.tree is None:
            raise RuntimeError("keep_path() without a tree pass before it")
        prefix, tokens, _ = self.tree
        self.truncate(prefix)
        self.fed += [tokens[node] for node in path]
        self.tree = None

    def truncate(self, length: int) -> None:
        del self.fed[max(0, length - self.trace.prompt_length):]

    def _step(self, positions: list[int], predictions: list[int], input_embeds: torch.Tensor) -> ReplayStep:
        """A pass whose hidden states are the recorded ones at cache `positions` (zeros past the
        recording) and whose greedy tokens are those recorded after `predictions`."""
        self.passes += 1
        recorded = self.trace.hidden
        index = torch.tensor(positions, dtype=torch.long, device=recorded.device)
        hidden = recorded[index.clamp(max=len(recorded) - 1)]
        hidden[index >= len(recorded)] = 0
        offset = 1 - self.trace.prompt_length               # position -> index of the action token predicted there
        tokens = [self.trace.tokens[p + offset] if p + offset < ACTION_DIM else EOS_TOKEN_ID for p in predictions]
        return ReplayStep(hidden, input_embeds, tokens)

    def _embed(self, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor([tokens], dtype=torch.long, device=self.trace.hidden.device)
        return self.model.embed_tokens(ids)[0].to(self.trace.hidden.dtype)


# --- recorded verifier outputs -------------------------------------------------------------

Episodes = list  # list of episodes, each a list of Traces in control-step order


def trace_episodes(directory: Path, verifier: LoadedVerifier) -> tuple[Episodes, str]:
    """Traces from `spec-vla-collect`, grouped by episode, on the verifier's device and dtype."""
    manifest, steps = read_traces(directory)
    if manifest["verifier"] != verifier.name:
        raise ValueError(f"{directory} holds traces of verifier '{manifest['verifier']}', not of '{verifier.name}' "
                         "(pass the same --verifier the traces were collected with)")
    episodes: dict = {}
    for step in steps:
        episodes.setdefault(step["episode"], []).append(Trace(
            step["tokens"].tolist(), step["hidden"].to(verifier.device, verifier.dtype),
            step["input_embeds"].to(verifier.device, verifier.dtype)))
    description = (f"{len(steps)} recorded actions in {len(episodes)} episode(s) from traces {directory} "
                   f"(features stored in {manifest['storage_dtype']}, {manifest['dropped_noops']} no-op steps "
                   "dropped at collection)")
    return list(episodes.values()), description


def bag_episodes(bag: Path, verifier: LoadedVerifier, center_crop: bool = True) -> tuple[Episodes, str]:
    """The bag's observations, decoded greedily by the verifier here, with their features."""
    episodes = []
    for instruction, images in tqdm(observation_episodes(bag), desc="verifier on bag frames", unit="episode"):
        prompt_ids = prompt_token_ids(verifier.tokenizer, instruction)
        episodes.append([trace_action(verifier.model, pixel_values(image, center_crop, verifier.image_normalization).to(verifier.device), prompt_ids)
                         for image in images])
    actions = sum(map(len, episodes))
    return episodes, f"{actions} frames in {len(episodes)} episode(s) from bag {bag}, decoded by the verifier here"


# --- measuring drafts ----------------------------------------------------------------------

def replay(draft: Draft, episodes: Episodes, model, num_draft_tokens: int, acceptance: Acceptance,
           tree: TreeShape | None = None) -> list[tuple[list[int], DecodeStats]]:
    """(tokens, stats) per recorded action, decoded by the real Decoder over ReplaySessions;
    `tree`: the draft proposes trees of that shape (None: chains of num_draft_tokens)."""
    current: list[Trace] = []
    decoder = Decoder(model, draft, num_draft_tokens, acceptance, tree=tree,
                      session_factory=lambda: ReplaySession(current[0], model))
    results = []
    for episode in episodes:
        decoder.reset_episode()
        for trace in episode:
            current[:] = [trace]
            results.append(decoder.decode(None, []))
    return results


@torch.inference_mode()
def token_accuracy(draft: Draft, episodes: Episodes) -> tuple[list[int], list[int]]:
    """Teacher-forced (correct, judged) per action dimension: the draft guesses each token given the
    verifier's true prefix, driven through the Draft protocol as the Decoder drives it. Dimension 0
    is judged only for drafts that propose the whole action before the prefill."""
    correct, judged = [0] * ACTION_DIM, [0] * ACTION_DIM
    for episode in episodes:
        draft.reset_episode()
        for trace in episode:
            tokens, prompt_length = trace.tokens, trace.prompt_length
            early = draft.propose_early(ACTION_DIM)[:ACTION_DIM]
            for index, guess in enumerate(early):
                correct[index] += guess == tokens[index]
                judged[index] += 1
            draft.begin(trace.hidden[:prompt_length], trace.input_embeds)
            for index in range(ACTION_DIM - 1):
                [guess] = draft.propose(tokens[index], 1) or [None]
                correct[index + 1] += guess == tokens[index + 1]
                judged[index + 1] += 1
                draft.accept([tokens[index]], trace.hidden[prompt_length + index:prompt_length + index + 1])
            draft.end_action(tokens)
    return correct, judged


@dataclass(frozen=True)
class DraftUnderTest:
    label: str
    draft: Draft
    checkpoint: str = ""                 # "" = packaged (mamba, llama) or none (history)
    train_accuracy: float | None = None


def measure(drafts: list[DraftUnderTest], episodes: Episodes, model, rules: list[Acceptance],
            shapes: list[tuple[int, TreeShape | None]], progress: bool = True) -> dict:
    """Rows for the report: one per (draft, rule, shape), plus token accuracy per draft. `shapes`:
    (num_draft_tokens, None) for a chain, (any k, TreeShape) for a tree (spec.shapes_to_compare)."""
    rows, accuracy = [], []
    runs = [(d, rule, k, tree) for d in drafts for rule in rules for k, tree in shapes]
    for entry, rule, k, tree in tqdm(runs, desc="spec-vla-harness", unit="run", disable=not progress):
        decoded = replay(entry.draft, episodes, model, k, rule, tree)
        stats = [s for _, s in decoded]
        recorded = [trace.tokens for episode in episodes for trace in episode]
        passes = sum(s.verifier_passes for s in stats)
        proposed = sum(map(sum, (s.proposed_per_pass for s in stats)))
        accepted, judged = position_outcome_counts(stats)
        rows.append({"draft": entry.label, "checkpoint": entry.checkpoint or None,
                     "draft_train_accuracy": entry.train_accuracy, "acceptance": rule.name,
                     "shape": (tree or TreeShape.chain(k)).name, **tree_statistics(stats),
                     "actions": len(stats), "acceptance_length": ACTION_DIM * len(stats) / passes,
                     "passes_per_action": passes / len(stats),
                     "one_pass_actions": sum(s.verifier_passes == 1 for s in stats) / len(stats),
                     "draft_ms_per_token": sum(s.draft_ms for s in stats) / proposed if proposed else None,
                     "draft_ms_per_action": statistics.fmean(s.draft_ms for s in stats),
                     "same_tokens_as_verifier": sum(s.generated == until_eos(r) for s, r in zip(stats, recorded))
                                                / len(stats),
                     "stopped_at_eos": sum(s.stopped_at_eos for s in stats),
                     "position_accepted": accepted, "position_judged": judged,
                     "step_passes": [s.verifier_passes for s in stats]})
    for entry in drafts:
        correct, judged = token_accuracy(entry.draft, episodes)
        accuracy.append({"draft": entry.label, "correct": correct, "judged": judged,
                         **{name: correct[i] / judged[i] if judged[i] else None
                            for i, name in enumerate(ACTION_NAMES)}})
    return {"runs": rows, "token_accuracy": accuracy}


# --- the report ----------------------------------------------------------------------------

RUN_COLUMNS = [
    Column("draft", "draft"), Column("draft_train_accuracy", "draft train acc", ".2%"),
    Column("acceptance", "acceptance"), Column("shape", "shape"), Column("actions", "actions"),
    Column("acceptance_length", "acceptance length", ".2f"), Column("passes_per_action", "passes / action", ".2f"),
    Column("one_pass_actions", "1-pass actions", ".0%"), Column("draft_ms_per_token", "draft ms / token", ".3f"),
    Column("draft_ms_per_action", "draft ms / action", ".2f"),
    Column("same_tokens_as_verifier", "same tokens as verifier", ".0%"), *TREE_COLUMNS,
]
ACCURACY_COLUMNS = [Column("draft", "draft")] + [Column(name, name, ".0%") for name in ACTION_NAMES]


def build_report(measured: dict, caption: str, figure_dir: Path) -> Report:
    runs = measured["runs"]
    run_label = [f"{row['draft']} {row['acceptance']} {row['shape']}" for row in runs]
    positions = [{"run": label, **{f"position_{i + 1}": row["position_accepted"][i] / row["position_judged"][i]
                                   if row["position_judged"][i] else None for i in range(ACTION_DIM)}}
                 for label, row in zip(run_label, runs)]
    figures = [
        plots.acceptance_length_histogram(figure_dir / "harness_acceptance_length_histogram.png",
                                          {label: row["step_passes"] for label, row in zip(run_label, runs)}, caption),
        plots.acceptance_by_position(figure_dir / "harness_acceptance_by_position.png",
                                     {label: (row["position_accepted"], row["position_judged"])
                                      for label, row in zip(run_label, runs)}, caption),
        plots.grouped_bars(figure_dir / "harness_token_accuracy.png",
                           "Teacher-forced token accuracy by action dimension", "accuracy", list(ACTION_NAMES),
                           {row["draft"]: [row[name] for name in ACTION_NAMES] for row in measured["token_accuracy"]},
                           caption, ylim=(0, 1)),
    ]
    tables = [
        Table("runs", "Per draft, acceptance rule and shape (chain:K = K tokens in a row)", RUN_COLUMNS, runs,
              note="'same tokens as verifier' (the verifier's output up to an EOS) must be 100% under strict "
                   "acceptance: the replay serves recorded tokens, so no pass-shape noise enters; draft ms include "
                   "all draft work in the decode loop (begin, propose, accept), divided by proposed tokens or "
                   "actions. Accepted depth: proposals kept per pass; kept: the share of passes whose kept path "
                   "came from the draft model, the previous action (history) or retrieved continuations."),
        Table("token_accuracy", "Teacher-forced token accuracy by action dimension", ACCURACY_COLUMNS,
              measured["token_accuracy"],
              note="Each token guessed given the verifier's true prefix; dx is judged only for drafts that "
                   "propose whole actions before the prefill (history)."),
        Table("positions", "Acceptance by draft position (accepted / judged proposals)",
              [Column("run", "run")] + [Column(f"position_{i + 1}", str(i + 1), ".0%") for i in range(ACTION_DIM)],
              positions),
    ]
    notes = ["Verifier outputs are replayed, not recomputed: verifier time is not measured here. Strict "
             "acceptance replays exactly; relaxed acceptance is an approximation, because after a kept-but-"
             "different draft token the verifier's outputs are not recorded and the recorded greedy "
             "continuation is served instead."]
    return Report("Offline draft harness", caption, tables, figures, notes)


# --- which verifier ------------------------------------------------------------------------

def verifier_name(verifier: str) -> str:
    """The name a loaded verifier gets (LoadedVerifier.name), read cheaply: the miniature's, the
    name in a directory's config.json, else the directory's own name (also for a path that is not
    on this machine, as recorded on another)."""
    if verifier == MINIATURE:
        return MINIATURE_NAME
    try:
        config = json.loads((Path(verifier) / "config.json").read_text())
        return str(config.get("spec_vla_ros", {}).get("name", Path(verifier).name))
    except (OSError, ValueError, AttributeError):
        return Path(verifier).name


def describe(verifier: str) -> str:
    return f"'{verifier_name(verifier)}'" + ("" if verifier == MINIATURE else f" ({verifier})")


def recorded_location(location: str, source: str) -> str:
    """A verifier location read from a recording, checked to exist here; absolute."""
    if location == MINIATURE:
        return location
    if not Path(location).is_dir():
        raise CommandError(f"{source} was recorded with verifier {location}, which is not a directory on this "
                           f"machine; pass --verifier DIR (a copy of '{verifier_name(location)}')")
    return str(absolute_path(location))


def traces_verifier(directory: Path, given: str | None) -> str:
    """The verifier to replay traces with: `given`, which must be the one that collected them,
    or the one their manifest records (`verifier_path`; `miniature` for older manifests of it)."""
    manifest = read_manifest(directory)
    recorded = manifest["verifier"]
    if given is not None:
        if verifier_name(given) != recorded:
            raise CommandError(f"--verifier {given} is '{verifier_name(given)}', but traces {directory} were "
                               f"collected with verifier '{recorded}'; leave --verifier out to use the recorded one "
                               "(traces hold their verifier's features and replay with no other)")
        return given
    location = recorded_verifier_location(manifest)
    if location is None:
        raise CommandError(f"traces {directory} do not record where their verifier '{recorded}' is (collected by an "
                           "older spec-vla-collect); pass --verifier DIR")
    return recorded_location(location, f"traces {directory}")


def bag_verifier(bag: Path, given: str | None, ignore_recorded: bool) -> str:
    """The verifier to decode a bag's frames with: the one its decode statistics record, or
    `given`, which must name the same verifier unless `ignore_recorded`."""
    if not bag.exists():
        raise CommandError(f"--bag {bag}: no such bag")
    try:
        decode_stats = read_bag(bag).decode_stats
    except (OSError, AnyReaderError) as error:
        raise CommandError(f"--bag {bag}: not a readable bag ({error})") from None
    recorded = list(dict.fromkeys(report.verifier for report in decode_stats if report.verifier is not None))
    if given is None:
        if not recorded:
            raise CommandError(f"bag {bag} records no verifier (no decode_stats naming one); pass --verifier "
                               "miniature or --verifier DIR")
        if len(recorded) > 1:
            raise CommandError(f"bag {bag} was recorded with several verifiers ({', '.join(recorded)}); pass "
                               "--verifier with --ignore-recorded-verifier to decode all its frames with one")
        return recorded_location(recorded[0], f"bag {bag}")
    others = [location for location in recorded if verifier_name(location) != verifier_name(given)]
    if others and not ignore_recorded:
        raise CommandError(f"--verifier {given} is '{verifier_name(given)}', but bag {bag} was recorded with "
                           f"{', '.join(map(describe, others))}; leave --verifier out to use the recorded one, or "
                           "pass --ignore-recorded-verifier to decode its frames with this one")
    return given
