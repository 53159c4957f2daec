"""Offline draft harness: the replayed verifier drives the real Decoder loop.

Synthetic traces (random features, tokens drawn from a known set) make the expected results
computable: an oracle draft reaches the largest acceptance length its num_draft_tokens allows,
and a draft guessing uniformly from the same set matches the analytic expectation.
"""
import json
import math
import os
from functools import lru_cache

import numpy as np
import pytest
import torch
from PIL import Image

from spec_vla_ros.analysis import harness
from spec_vla_ros.analysis.harness import DraftUnderTest, build_report, measure, replay, token_accuracy
from spec_vla_ros.analysis.plots import FIGURE_PIXELS
from spec_vla_ros.analysis.report import draft_train_accuracy
from spec_vla_ros.commands import harness as harness_command
from spec_vla_ros.drafts.checkpoints import read_draft_config
from spec_vla_ros.decoding.acceptance import STRICT, STRICT_TIE_TOLERANCE_FP32, Acceptance
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.base import Draft
from spec_vla_ros.drafts.history import HistoryDraft
from spec_vla_ros.training.collect import Trace, TraceWriter, synthetic_episode, trace_action
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MIN, EOS_TOKEN_ID
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import lm_head_logits

PROMPT_LENGTH = 5
TOKEN_SET = (ACTION_TOKEN_MIN + 100, ACTION_TOKEN_MIN + 101)     # a random guess from it is right half the time


def synthetic_traces(directory, verifier, episodes: int, steps: int, seed: int = 0):
    """Traces in spec-vla-collect's format: random features, tokens uniform over TOKEN_SET."""
    generator = torch.Generator().manual_seed(seed)
    hidden_size = verifier.model.hidden_size
    writer = TraceWriter(directory, verifier, source={"test": "synthetic"}, storage_dtype="float32")
    for episode in range(episodes):
        for step in range(steps):
            picks = torch.randint(len(TOKEN_SET), (ACTION_DIM,), generator=generator)
            writer.add(Trace([TOKEN_SET[i] for i in picks], torch.randn(PROMPT_LENGTH + ACTION_DIM - 1, hidden_size,
                                                                        generator=generator),
                             torch.randn(PROMPT_LENGTH, hidden_size, generator=generator)),
                       episode, step, "put the bowl on the plate")
    return writer.close()


class OracleDraft(Draft):
    """Knows the recorded actions, in order; with `early`, proposes each whole action before the prefill."""
    name = "oracle"

    def __init__(self, actions, early: bool):
        self.actions, self.early, self.index, self.produced = actions, early, 0, []

    def propose_early(self, k):
        self.produced = []
        return self.actions[self.index][:k] if self.early else []

    def begin(self, hidden, input_embeds):
        self.produced = []

    def propose(self, next_token, k):
        start = len(self.produced) + 1
        return self.actions[self.index][start:start + k]

    def accept(self, tokens, hidden):
        self.produced += tokens

    def end_action(self, tokens):
        self.index += 1


class RandomDraft(Draft):
    """Proposes tokens drawn uniformly from TOKEN_SET, whatever it is shown."""
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def propose(self, next_token, k):
        return [TOKEN_SET[i] for i in self.rng.integers(len(TOKEN_SET), size=k)]


def expected_passes(k: int, p: float) -> float:
    """Expected verifier passes per action for a draft whose every proposal is right with probability p,
    independently, and that proposes nothing before the prefill: the prefill yields token 1; then
    each pass proposes r = min(k, 7 - n - 1) tokens, keeps the a leading right ones (P(a) = p^a (1 - p),
    or p^r when all are right) plus the verifier's own token."""
    @lru_cache(maxsize=None)
    def remaining(n: int) -> float:
        if n >= ACTION_DIM:
            return 0.0
        r = min(k, ACTION_DIM - n - 1)
        outcomes = [(p ** a * (1 - p), a) for a in range(r)] + [(p ** r, r)]
        return 1.0 + sum(probability * remaining(n + a + 1) for probability, a in outcomes)
    return 1.0 + remaining(1)


@pytest.fixture(scope="module")
def verifier():
    from spec_vla_ros.vla.verifiers import load_verifier
    return load_verifier()


@pytest.fixture(scope="module")
def traces(verifier, tmp_path_factory):
    directory = synthetic_traces(tmp_path_factory.mktemp("traces"), verifier, episodes=6, steps=50)
    episodes, _ = harness.trace_episodes(directory, verifier)
    return directory, episodes


@pytest.mark.parametrize("num_draft_tokens", range(1, ACTION_DIM + 1))
@pytest.mark.parametrize("early", [False, True])
def test_an_always_right_draft_reaches_the_largest_acceptance_length(traces, verifier, num_draft_tokens, early):
    episode = traces[1][0]
    recorded = [trace.tokens for trace in episode]
    decoded = replay(OracleDraft(recorded, early), [episode], verifier.model, num_draft_tokens, STRICT)
    # Before the prefill: all 7 tokens verified in the prefill pass. Otherwise the prefill yields one
    # token and every later pass k proposals plus the verifier's own token.
    passes = 1 if early else 1 + math.ceil((ACTION_DIM - 1) / (num_draft_tokens + 1))
    assert [tokens for tokens, _ in decoded] == recorded
    assert {stats.verifier_passes for _, stats in decoded} == {passes}
    assert {stats.acceptance_length for _, stats in decoded} == {ACTION_DIM / passes}


@pytest.mark.parametrize("num_draft_tokens", [1, 3, 6])
def test_a_random_draft_scores_near_its_expected_value(traces, verifier, num_draft_tokens):
    _, episodes = traces
    decoded = replay(RandomDraft(), episodes, verifier.model, num_draft_tokens, STRICT)
    passes = np.array([stats.verifier_passes for _, stats in decoded])
    assert all(tokens == trace.tokens for (tokens, _), trace in zip(decoded, sum(episodes, [])))     # lossless
    expected = expected_passes(num_draft_tokens, 1 / len(TOKEN_SET))
    standard_error = passes.std(ddof=1) / math.sqrt(len(passes))
    assert abs(passes.mean() - expected) < 4 * standard_error, (passes.mean(), expected, standard_error)

    correct, judged = token_accuracy(RandomDraft(seed=1), episodes)
    assert judged == [0] + [len(passes)] * (ACTION_DIM - 1)        # no guesses before the prefill
    tolerance = 4 * math.sqrt(0.25 / len(passes))
    assert all(abs(c / j - 1 / len(TOKEN_SET)) < tolerance for c, j in zip(correct[1:], judged[1:]))


def test_relaxed_acceptance_keeps_near_tokens_in_the_replay(traces, verifier):
    """A draft one bin off everywhere is rejected under strict acceptance and fully kept when relaxed."""
    _, episodes = traces
    recorded = [trace.tokens for trace in episodes[0][:10]]
    off_by_one = [[token + 1 for token in tokens] for tokens in recorded]
    strict = replay(OracleDraft(off_by_one, early=True), [episodes[0][:10]], verifier.model, 4, STRICT)
    relaxed = replay(OracleDraft(off_by_one, early=True), [episodes[0][:10]], verifier.model, 4, Acceptance(1))
    assert [tokens for tokens, _ in strict] == recorded and all(s.verifier_passes == 7 for _, s in strict)
    assert [tokens for tokens, _ in relaxed] == off_by_one and all(s.verifier_passes == 1 for _, s in relaxed)


def test_replay_matches_live_decoding_with_the_verifier(verifier):
    """Strict acceptance over recorded outputs takes the same passes as the verifier itself wherever
    live decoding gives the recorded (AR) tokens. Where it does not, the first difference is a
    near-tie of the recorded AR logits (live passes have other shapes), and the history draft's
    later proposals in that episode differ, so the comparison stops there. Fresh seeds."""
    seed = int.from_bytes(os.urandom(4), "little") % 10**6
    prompt_ids = prompt_token_ids(verifier.tokenizer, "put the bowl on the plate")
    frames_per_episode = 6
    frames = []
    for episode in (seed, seed + 1):           # the last frame repeats: history then proposes its action
        episode_frames = synthetic_episode(episode, frames_per_episode - 1, size=64)[1]
        frames += list(episode_frames) + [episode_frames[-1]]
    live_decoder = Decoder(verifier.model, HistoryDraft(), 4, STRICT)
    live, recorded = [], []
    for index, frame in enumerate(frames):
        if index % frames_per_episode == 0:
            live_decoder.reset_episode()
            recorded.append([])
        live.append(live_decoder.decode(pixel_values(frame), prompt_ids)[1])
        recorded[-1].append(trace_action(verifier.model, pixel_values(frame), prompt_ids))
    replayed = [stats for _, stats in replay(HistoryDraft(), recorded, verifier.model, 4, STRICT)]
    lm_head = verifier.model.language_model.lm_head.weight
    compared = 0
    for episode, traces in enumerate(recorded):
        start = episode * frames_per_episode
        for step, trace in enumerate(traces):
            mine, theirs = live[start + step], replayed[start + step]
            message = f"seed {seed}, episode {episode}, step {step}"
            assert theirs.tokens == trace.tokens, message
            if mine.tokens != trace.tokens:
                first = next(i for i, (a, b) in enumerate(zip(mine.generated, trace.tokens)) if a != b)
                with torch.inference_mode():
                    logits = lm_head_logits(lm_head, trace.hidden[trace.prompt_length - 1:])
                gap = float(logits[first, trace.tokens[first]] - logits[first, mine.generated[first]])
                assert 0 <= gap <= STRICT_TIE_TOLERANCE_FP32, f"{message}: AR logit gap {gap:.3g} at token {first}"
                break
            assert (mine.accepted_per_pass, mine.proposed_per_pass) == \
                (theirs.accepted_per_pass, theirs.proposed_per_pass), message
            compared += 1
    assert compared >= 2, f"seed {seed}: near-ties cut both episodes short"
    assert any(s.verifier_passes < ACTION_DIM for s in live), f"seed {seed}: history got nothing accepted, " \
        "not even on a repeated frame"


def test_a_replayed_tree_pass_serves_each_node_the_recording_at_its_depth(verifier):
    """ReplaySession's tree passes (the prefill's early tree and verify_tree): node i gets the
    recorded hidden state and greedy token of the position at its depth, zeros past the recording;
    keep_path keeps the path's tokens after the prefix, as VerifierSession does."""
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    hidden_size = verifier.model.hidden_size
    tokens = (ACTION_TOKEN_MIN + torch.randint(0, 256, (ACTION_DIM,), generator=generator)).tolist()
    trace = Trace(tokens, torch.randn(PROMPT_LENGTH + ACTION_DIM - 1, hidden_size, generator=generator),
                  torch.randn(PROMPT_LENGTH, hidden_size, generator=generator))
    session = harness.ReplaySession(trace, verifier.model)
    early, early_parents = [tokens[0], tokens[0] + 1, tokens[1], tokens[2]], [-1, -1, 0, 2]   # depths 0 0 1 2
    step = session.prefill(None, [], early, early_parents)
    assert step.greedy() == [tokens[0], tokens[1], tokens[1], tokens[2], tokens[3]]
    assert torch.equal(step.hidden[:PROMPT_LENGTH], trace.hidden[:PROMPT_LENGTH])
    assert torch.equal(step.hidden[PROMPT_LENGTH:], trace.hidden[[PROMPT_LENGTH + d for d in (0, 0, 1, 2)]])
    session.keep_path([0, 2])                                  # tokens 0 and 1 kept
    assert session.length == PROMPT_LENGTH + 2 and session.fed == tokens[:2]
    # the pending token (tokens[2]) as root, then a tree of depths 1, 1, 2, 3, 4
    step = session.verify_tree([tokens[2], tokens[3], tokens[3] + 1, tokens[4], tokens[5], tokens[6]],
                               [-1, 0, 0, 1, 3, 4])
    depths = [0, 1, 1, 2, 3, 4]
    assert step.greedy_rows([0, 2, 5]) == [tokens[3], tokens[4], EOS_TOKEN_ID]
    recorded_rows = [PROMPT_LENGTH + 2 + d for d in depths[:4]]
    assert torch.equal(step.hidden[:4], trace.hidden[recorded_rows]) and not step.hidden[5].any()
    session.keep_path([0, 1, 3])
    assert session.fed == tokens[:5] and session.passes == 2


def test_replayed_trees_match_live_tree_decoding(verifier):
    """A hybrid tree (the previous action, retrieved continuations) decoded over recorded outputs
    keeps the same paths, from the same sources, as the verifier's own tree passes wherever live
    decoding gives the recorded (AR) tokens (near-ties apart, as for chains). Fresh seeds."""
    from spec_vla_ros.decoding.spec import parse_tree_shape
    seed = int.from_bytes(os.urandom(4), "little") % 10**6
    prompt_ids = prompt_token_ids(verifier.tokenizer, "open the top drawer")
    tree = parse_tree_shape("hybrid:16")
    frames = list(synthetic_episode(seed, 3, size=64)[1])
    frames.append(frames[-1])
    live_decoder = Decoder(verifier.model, HistoryDraft(), 4, STRICT, tree=tree)
    live = [live_decoder.decode(pixel_values(frame), prompt_ids)[1] for frame in frames]
    recorded = [trace_action(verifier.model, pixel_values(frame), prompt_ids) for frame in frames]
    replayed = [stats for _, stats in replay(HistoryDraft(), [recorded], verifier.model, 4, STRICT, tree)]
    compared = 0
    for step, (mine, theirs, trace) in enumerate(zip(live, replayed, recorded)):
        assert theirs.tokens == trace.tokens and theirs.tree_shape == tree.name, step
        if mine.tokens != trace.tokens:
            break                                  # a near-tie: later proposals depend on it
        assert (mine.accepted_per_pass, mine.proposed_per_pass, mine.source_per_pass) == \
            (theirs.accepted_per_pass, theirs.proposed_per_pass, theirs.source_per_pass), f"seed {seed}, step {step}"
        compared += 1
    assert compared >= 2, f"seed {seed}: near-ties cut the episode short"
    assert max(p for stats in replayed for p in stats.proposed_per_pass) > 4     # trees, not chains of 4


def test_a_recorded_eos_ends_the_replayed_action(verifier):
    """Traces record 7 greedy tokens whatever they are; an EOS among them ends the action, as
    OpenVLA's generate does, and 'same tokens as verifier' compares up to it."""
    generator = torch.Generator().manual_seed(0)
    hidden_size = verifier.model.hidden_size
    tokens = [ACTION_TOKEN_MIN + 100, ACTION_TOKEN_MIN + 101, EOS_TOKEN_ID] + [ACTION_TOKEN_MIN + 100] * 4
    trace = Trace(tokens, torch.randn(PROMPT_LENGTH + ACTION_DIM - 1, hidden_size, generator=generator),
                  torch.randn(PROMPT_LENGTH, hidden_size, generator=generator))
    for draft in (HistoryDraft(), OracleDraft([tokens] * 4, early=True)):      # replay, then token accuracy
        measured = measure([DraftUnderTest("d", draft)], [[trace, trace]], verifier.model, [STRICT], [(3, None)],
                           progress=False)
        [row] = measured["runs"]
        assert row["same_tokens_as_verifier"] == 1.0 and row["stopped_at_eos"] == 2
    [(_, stats)] = replay(HistoryDraft(), [[trace]], verifier.model, 3, STRICT)
    assert stats.generated == tokens[:3] and stats.verifier_passes == 3


def test_report_and_command_line(traces, verifier, tmp_path, capsys):
    directory, episodes = traces
    measured = measure([DraftUnderTest("random", RandomDraft()), DraftUnderTest("history", HistoryDraft())],
                       episodes, verifier.model, [STRICT, Acceptance(9)], [(2, None), (4, None)], progress=False)
    assert [(r["draft"], r["acceptance"], r["shape"]) for r in measured["runs"]] == [
        (d, a, f"chain:{k}") for d in ("random", "history") for a in ("strict", "relaxed:9") for k in (2, 4)]
    for row in measured["runs"]:
        assert row["actions"] == sum(map(len, episodes)) and 1.0 <= row["acceptance_length"] <= ACTION_DIM
        assert row["acceptance_length"] == pytest.approx(ACTION_DIM / row["passes_per_action"])
        if row["acceptance"] == "strict":
            assert row["same_tokens_as_verifier"] == 1.0
    report = build_report(measured, "test caption", tmp_path)
    paths = report.write(tmp_path, "harness")
    assert set(json.loads(paths["json"].read_text())["tables"]) == {"runs", "token_accuracy", "positions"}
    for figure in report.figures:
        with Image.open(figure) as image:
            assert image.format == "PNG" and image.size == FIGURE_PIXELS

    output = tmp_path / "cli"
    assert harness_command.main(["--traces", str(directory), "--drafts", "history", "--acceptance", "strict",
                         "relaxed:3", "--trees", "chain", "hybrid:16", "--output", str(output), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "miniature" in printed and f"{sum(map(len, episodes))} recorded actions in 6 episode(s)" in printed
    rows = json.loads((output / "harness.json").read_text())["tables"]["runs"]
    assert [(row["draft"], row["acceptance"], row["shape"]) for row in rows] == [
        ("history", rule, shape) for rule in ("strict", "relaxed:3") for shape in ("chain:4", "hybrid:16:6:8")]
    for row in rows:          # a pass adds its kept proposals and the verifier's token (cut at the action's end)
        assert row["acceptance_length"] - 1 <= row["accepted_depth"] <= row["acceptance_length"]
        kept = {source: row[f"kept_{source}"] for source in ("model", "history", "retrieval")}
        assert 0 < sum(kept.values()) <= 1 and kept["model"] == 0, kept          # history has no model
        if row["shape"] == "chain:4":
            assert kept["retrieval"] == 0, kept


# --- the verifier a recording names, and the command line ----------------------------------------

def write_manifest(directory, verifier: str, verifier_path=None):
    """A trace manifest (no steps) as spec-vla-collect writes it; `verifier_path` None: an older one without it."""
    from spec_vla_ros.training.collect import MANIFEST, TRACE_FORMAT, TRACE_FORMAT_VERSION
    directory.mkdir(parents=True)
    manifest = {"format": TRACE_FORMAT, "format_version": TRACE_FORMAT_VERSION, "verifier": verifier,
                "shards": [], "steps": []}
    if verifier_path is not None:
        manifest["verifier_path"] = verifier_path
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_a_draft_checkpoint_is_read_once_and_loaded_from_what_was_read(traces, tmp_path, draft_config_reads, capsys):
    import spec_vla_ros.drafts.registry as registry
    directory, _ = traces
    reads = draft_config_reads
    output = tmp_path / "cli"
    assert harness_command.main(["--traces", str(directory), "--drafts", "mamba", "--acceptance", "strict",
                         "--num-draft-tokens", "2", "--output", str(output), "--no-progress"]) == 0
    capsys.readouterr()
    assert reads == [registry.PACKAGED_CHECKPOINTS / "mamba"]
    [row] = json.loads((output / "harness.json").read_text())["tables"]["runs"]
    expected = draft_train_accuracy(read_draft_config(registry.PACKAGED_CHECKPOINTS / "mamba"))
    assert (row["draft"], row["draft_train_accuracy"]) == ("mamba", expected) and expected is not None


def test_traces_are_replayed_with_the_verifier_their_manifest_names(tmp_path, monkeypatch):
    from spec_vla_ros.vla.miniature import MINIATURE_NAME
    from spec_vla_ros.training.arguments import CommandError

    model = tmp_path / "models" / "openvla-7b-finetuned-libero-goal"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "openvla"}))
    monkeypatch.chdir(tmp_path)
    traces = write_manifest(tmp_path / "traces", model.name, str(model))
    assert harness.traces_verifier(traces, None) == str(model)
    assert harness.traces_verifier(traces, "models/" + model.name) == "models/" + model.name
    with pytest.raises(CommandError, match=f"collected with verifier '{model.name}'"):
        harness.traces_verifier(traces, "miniature")
    older = write_manifest(tmp_path / "older", MINIATURE_NAME)            # no verifier_path: the miniature's
    assert harness.traces_verifier(older, None) == "miniature"
    with pytest.raises(CommandError, match="do not record where"):
        harness.traces_verifier(write_manifest(tmp_path / "older-real", model.name), None)
    moved = write_manifest(tmp_path / "moved", model.name, str(tmp_path / "gone" / model.name))
    with pytest.raises(CommandError, match="not a directory on this machine"):
        harness.traces_verifier(moved, None)


def test_the_command_refuses_in_one_line(traces, tmp_path, capsys):
    directory, _ = traces
    for argv, message in [(["--traces", str(directory), "--verifier", str(tmp_path)], "collected with verifier"),
                          (["--traces", str(directory), "--drafts", "eagle"], "draft 'eagle'"),
                          (["--traces", str(directory), "--drafts", "none"], "draft 'none': expected mamba, llama, "
                                                                              "history"),
                          (["--traces", str(directory), "--drafts", "history=x"], "the history draft has no checkpoint"),
                          (["--traces", str(directory), "--checkpoint", "history=x"], "--checkpoint takes"),
                          (["--traces", str(directory), "--num-draft-tokens", "0"], "--num-draft-tokens 0"),
                          (["--traces", str(directory), "--acceptance", "loose"], "loose"),
                          (["--traces", str(directory), "--verifier", "miniature", "--ignore-recorded-verifier"],
                           "goes with --bag"),
                          (["--traces", str(tmp_path / "none")], "no manifest.json"),
                          (["--bag", str(tmp_path / "none")], "no such bag")]:
        assert harness_command.main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("spec-vla-harness: ") and message in error and error.count("\n") == 1, error
    with pytest.raises(SystemExit) as exit_:
        harness_command.main(["--traces", str(directory), "--threads", "many"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def option_help(parser) -> dict[str, str]:
    """--help's text per option (its lines joined), at a width where nothing is cut."""
    entries, current = {}, None
    for line in parser.format_help().splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("command", ["spec-vla-harness", "spec-vla-bench decode"])
def test_every_option_has_help_that_shows_its_default(command, monkeypatch):
    import argparse

    from spec_vla_ros.commands.benchmarks import decode

    monkeypatch.setenv("COLUMNS", "200")
    if command == "spec-vla-harness":
        parser = harness_command.build_parser()
    else:
        parser = argparse.ArgumentParser(prog=command)
        decode.add_arguments(parser)
    entries = option_help(parser)
    options = [action.option_strings[0] for action in parser._actions if action.option_strings
               and action.option_strings[0] != "-h"]
    assert options and set(options) <= set(entries)
    for option in options:
        text = entries[option].split(None, 1)[1] if " " in entries[option].strip() else ""
        assert "(default: " in text and len(text.split("(default: ")[0].split()) >= 2, entries[option]
