"""Trace collection and draft training on the miniature: traces are the verifier's greedy run,
no-ops are dropped, a briefly trained draft beats the most-frequent-token baseline, resume is exact."""
import argparse
import json

import numpy as np
import pytest
import torch

from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.checkpoints import load_head
from spec_vla_ros.drafts.eagle_head import (EagleDraft, EagleHead, action_logits, default_core_config,
                                            verifier_action_rows)
from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS
from spec_vla_ros.commands import collect as collect_command
from spec_vla_ros.commands import train_draft
from spec_vla_ros.training import collect, train
from spec_vla_ros.vla.action_tokenizer import NormStats
from spec_vla_ros.training.arguments import CommandError
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MIN
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import lm_head_logits

EPISODES, STEPS = 96, 1


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "synthetic"
    collect_command.main([str(out), "--episodes", str(EPISODES), "--steps-per-episode", str(STEPS), "--seed", "500",
                  "--shard-steps", "16"])
    return out


def miniature_pixels(miniature, frame):
    return pixel_values(frame, normalization=miniature.image_normalization)


def test_traces_are_the_verifiers_greedy_run(miniature, traces):
    """Each step keeps the last 17 prompt positions (the default --context 16 plus the pair's
    first hidden state) and the action positions, in fp16 (the fp32 miniature's storage dtype)."""
    manifest, steps = collect.read_traces(traces)
    assert manifest["verifier"] == miniature.name and manifest["num_steps"] == len(steps) == EPISODES * STEPS
    assert manifest["storage_dtype"] == "float16" and manifest["prompt_window"] == 16
    assert len(manifest["shards"]) == -(-len(steps) // 16)
    lm_head = miniature.model.language_model.lm_head.weight
    ar = Decoder(miniature.model)
    for step in steps[:3]:
        window = step["window"]
        assert step["prompt_length"] > window == 17
        assert step["input_embeds"].shape == (window, miniature.model.hidden_size)
        assert step["hidden"].shape == (window + ACTION_DIM - 1, miniature.model.hidden_size)
        assert step["hidden"].dtype == step["input_embeds"].dtype == torch.float16
        instruction, frames = collect.synthetic_episode(500 + step["episode"], STEPS)
        pixels, prompt_ids = miniature_pixels(miniature, frames[step["step"]]), prompt_token_ids(miniature.tokenizer,
                                                                                                  instruction)
        tokens, _ = ar.decode(pixels, prompt_ids)
        assert tokens == step["tokens"].tolist() and step["instruction"] == instruction
        # the stored window is the verifier's own features at the last positions, rounded to fp16
        full = collect.trace_action(miniature.model, pixels, prompt_ids)
        assert full.prompt_length == step["prompt_length"]
        torch.testing.assert_close(step["hidden"].float(), full.hidden[-window - ACTION_DIM + 1:], rtol=2 ** -10,
                                   atol=1e-6)
        torch.testing.assert_close(step["input_embeds"].float(), full.input_embeds[-window:], rtol=2 ** -10,
                                   atol=1e-6)
        # hidden state at window position W - 1 + i predicts token i (fp16 keeps the argmax here)
        with torch.no_grad():
            assert lm_head_logits(lm_head, step["hidden"][window - 1:].float()).argmax(-1).tolist() == \
                step["tokens"].tolist()


def test_collect_from_an_image_directory(tmp_path):
    from PIL import Image
    for episode, instruction in (("ep0", "turn on the stove"), ("ep1", "put the bowl on the plate")):
        (tmp_path / "frames" / episode).mkdir(parents=True)
        for index, frame in enumerate(collect.synthetic_episode(len(instruction), 2, size=64)[1]):
            Image.fromarray(frame).save(tmp_path / "frames" / episode / f"{index:03d}.png")
    (tmp_path / "frames" / "instructions.json").write_text(json.dumps({"ep0": "turn on the stove"}))
    collect_command.main([str(tmp_path / "traces"), "--source", "images", "--images", str(tmp_path / "frames"),
                  "--instruction", "put the bowl on the plate"])
    manifest, steps = collect.read_traces(tmp_path / "traces")
    assert [(s["episode"], s["step"], s["instruction"]) for s in steps] == [
        (0, 0, "turn on the stove"), (0, 1, "turn on the stove"),
        (1, 0, "put the bowl on the plate"), (1, 1, "put the bowl on the plate")]


def test_noop_rule_follows_openvla():
    still, moving = np.array([0, 0, 0, 0, 0, 0, 1.0]), np.array([0.01, 0, 0, 0, 0, 0, 1.0])
    assert collect.is_noop(still, None)
    assert not collect.is_noop(moving, None)
    assert collect.is_noop(still + [5e-5, 0, 0, 0, 0, 0, 0], moving)     # gripper unchanged
    assert not collect.is_noop(still * [1, 1, 1, 1, 1, 1, -1], moving)   # gripper changes: kept


def test_collector_drops_noops(miniature, tmp_path):
    writer = collect.TraceWriter(tmp_path / "t", miniature, {"source": "test"})
    collector = collect.Collector(miniature, writer)
    zeros = (0.0,) * ACTION_DIM
    collector.norm_stats = NormStats(zeros, zeros, (True,) * 6 + (False,))   # every pose delta -> 0
    collector.new_episode()
    instruction, frames = collect.synthetic_episode(3, 3)
    actions = [collector(frame, instruction) for frame in frames]
    writer.close()
    manifest = json.loads((tmp_path / "t" / collect.MANIFEST).read_text())
    # nothing kept yet, so each still action is judged on its own (OpenVLA's first-step rule): all dropped
    assert manifest["num_steps"] == 0 and manifest["dropped_noops"] == len(actions) == 3


def train_args(traces, out, *flags, **overrides):
    settings = {"kind": "llama", "context": 8, "steps": 300, "batch_size": 16, "lr": 3e-3, "eval_every": 300,
                "checkpoint_every": 60, "val_fraction": 0.25, **overrides}
    args = [*flags, "--out", str(out)]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    parser = argparse.ArgumentParser()
    train_draft.add_arguments(parser)
    return parser.parse_args([str(traces), *args])


def test_training_beats_the_most_frequent_token(miniature, traces, tmp_path):
    training = train.train(train_args(traces, tmp_path / "draft"))
    baseline, validation = training["most_frequent_baseline"], training["val_accuracy"]
    assert len(validation) == len(baseline) == ACTION_DIM - 1
    assert np.mean(validation) > np.mean(baseline) + 0.05, (validation, baseline)
    config = json.loads((tmp_path / "draft" / "draft.json").read_text())
    assert config["training"]["val_accuracy"] == validation and config["verifier"] == miniature.name
    assert len(config["training"]["val_chain_accuracy"]) == ACTION_DIM - 1


def test_mamba_core_size_options_reach_the_checkpoint_and_the_draft(miniature, traces, tmp_path):
    settings = {"kind": "mamba", "steps": 2, "eval_every": 2, "checkpoint_every": 2}
    train.train(train_args(traces, tmp_path / "small", **settings, d_state=8, expand=1))
    head, config = load_head(tmp_path / "small")
    hidden_size = miniature.model.language_model.config.hidden_size
    assert (config["core"]["d_state"], config["core"]["expand"]) == (8, 1)
    mixer = head.core.layers[0].mixer
    assert mixer.A_log.shape == (hidden_size, 8) and mixer.in_proj.weight.shape == (2 * hidden_size, hidden_size)
    draft = EagleDraft(head, miniature.model)
    draft.begin(torch.randn(20, hidden_size), torch.randn(20, hidden_size))
    assert all(ACTION_TOKEN_MIN <= token < ACTION_TOKEN_MIN + 256 for token in draft.propose(ACTION_TOKEN_MIN, 3))
    for option in ("d_state", "expand"):
        with pytest.raises(CommandError, match=f"--{option.replace('_', '-')} 0: expected at least 1"):
            train.train(train_args(traces, tmp_path / option, **settings, **{option: 0}))


def test_resume_continues_exactly(traces, tmp_path, monkeypatch):
    settings = {"steps": 6, "checkpoint_every": 3, "eval_every": 6}
    train.train(train_args(traces, tmp_path / "straight", **settings))
    schedule = train.learning_rate

    def crash_at_step_4(step, *args):
        if step == 3:
            raise RuntimeError("simulated crash")
        return schedule(step, *args)

    monkeypatch.setattr(train, "learning_rate", crash_at_step_4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train(train_args(traces, tmp_path / "resumed", **settings))
    monkeypatch.setattr(train, "learning_rate", schedule)
    assert train.train(train_args(traces, tmp_path / "resumed", "--resume", **settings))["step"] == 6
    straight, _ = load_head(tmp_path / "straight")
    resumed, _ = load_head(tmp_path / "resumed")
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_training_drafts_exactly_as_deployed(miniature, traces):
    """The batched `chain` predictions that training scores are what EagleDraft proposes, up to the
    first wrong proposal (after it, training pairs the verifier's token, the draft its own)."""
    head, _ = load_head(PACKAGED_CHECKPOINTS / "llama")
    dataset = train.TraceDataset([traces], train.VerifierParts.of(miniature), 0.25)
    draft = EagleDraft(head, miniature.model)
    action_rows = verifier_action_rows(miniature.model)
    compared = []
    for step in dataset.val:
        inputs, next_embeds, _, _ = dataset.batch(head, [step])
        with torch.no_grad():
            _, chained = train.predict(head, inputs, next_embeds, chain=True)
        expected = (action_logits(chained[0], action_rows).argmax(-1) + ACTION_TOKEN_MIN).tolist()
        draft.begin(step["hidden"][:step["window"]], step["input_embeds"])
        proposals = draft.propose(int(step["tokens"][0]), ACTION_DIM - 1)
        right = [p == t for p, t in zip(expected, step["tokens"][1:].tolist())] + [False]
        checked = right.index(False) + 1
        assert proposals[:checked] == expected[:checked]
        compared.append(checked)
    assert max(compared) > 1, "no chain got past its first proposal: nothing beyond step 1 compared"


@pytest.fixture(scope="module")
def episode_traces(tmp_path_factory):
    """Episodes of several control steps, for heads that carry their state from one step to the next."""
    out = tmp_path_factory.mktemp("traces") / "episodes"
    collect_command.main([str(out), "--episodes", "8", "--steps-per-episode", "3", "--seed", "900"])
    return out


def test_carry_training_reports_early_proposals_beside_history(episode_traces, tmp_path):
    training = train.train(train_args(episode_traces, tmp_path / "draft", "--carry", kind="mamba", steps=4,
                                      eval_every=4, checkpoint_every=4))
    for split in ("train", "val"):
        early, history = training[f"{split}_early_chain_accuracy"], training[f"{split}_history_early_accuracy"]
        assert len(early) == len(history) == ACTION_DIM
        assert all(a >= b for a, b in zip(early, early[1:])) and all(a >= b for a, b in zip(history, history[1:]))
    head, config = load_head(tmp_path / "draft")
    assert head.carry and config["carry"] is True
    with pytest.raises(CommandError, match="--carry"):
        train.train(train_args(episode_traces, tmp_path / "draft", "--resume", kind="mamba", steps=8))


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_early_proposals_are_drafted_exactly_as_trained(miniature, episode_traces, kind):
    """Driven through the Draft protocol over one step, a carrying head's proposals for the next
    step are what training's chain predicts for them."""
    torch.manual_seed(0)
    head = EagleHead(kind, default_core_config(kind, miniature.model), context=8, carry=True).eval()
    with torch.no_grad():
        head.copy_bias.fill_(2.0)         # within the untrained head's logit gaps: it decides some tokens
    dataset = train.TraceDataset([episode_traces], train.VerifierParts.of(miniature), 0.0, carry=True)
    draft = EagleDraft(head, miniature.model)
    action_rows = verifier_action_rows(miniature.model)
    steps = [step for step in dataset.train if step["next"] is not None][:4]
    assert steps
    copied = changed = 0
    for step in steps:
        length, tokens = step["window"], step["tokens"].tolist()
        draft.reset_episode()
        assert draft.propose_early(ACTION_DIM) == []               # nothing carried into an episode
        draft.begin(step["hidden"][:length], step["input_embeds"])
        for index in range(ACTION_DIM - 1):
            draft.accept([tokens[index]], step["hidden"][length + index:length + index + 1])
        draft.end_action(tokens)
        proposals = draft.propose_early(ACTION_DIM)
        assert len(proposals) == ACTION_DIM and draft.propose_early(ACTION_DIM) == []   # used once

        inputs, next_embeds, _, _ = dataset.batch(head, [step])
        with torch.no_grad():
            _, chained = train.predict(head, inputs, next_embeds, chain=True, early=True)
            logits = action_logits(chained, action_rows) + train.copy_bonus(head, [step], chained.shape[1])
        expected = (logits[0, ACTION_DIM - 1:].argmax(-1) + ACTION_TOKEN_MIN).tolist()
        assert proposals == expected
        copied += sum(p == t for p, t in zip(proposals, tokens))
        unbiased = (action_logits(chained[0, ACTION_DIM - 1:], action_rows).argmax(-1) + ACTION_TOKEN_MIN).tolist()
        changed += proposals != unbiased
    assert copied and changed, "with this bias some proposals should be copies, and the bias should change some"
