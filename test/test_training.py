"""Trace collection and draft training on the miniature: traces are the verifier's greedy run,
no-ops are dropped, a briefly trained draft beats the most-frequent-token baseline, resume is exact."""
import json

import numpy as np
import pytest
import torch

from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.checkpoints import load_head
from spec_vla_ros.drafts.eagle_head import EagleDraft, action_logits, verifier_action_rows
from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS
from spec_vla_ros.training import collect, train
from spec_vla_ros.vla.action_tokenizer import NormStats
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MIN
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids

EPISODES, STEPS = 48, 1


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "synthetic"
    collect.main([str(out), "--episodes", str(EPISODES), "--steps-per-episode", str(STEPS), "--seed", "500",
                  "--shard-steps", "16"])
    return out


def test_traces_are_the_verifiers_greedy_run(miniature, traces):
    manifest, steps = collect.read_traces(traces)
    assert manifest["verifier"] == miniature.name and manifest["num_steps"] == len(steps) == EPISODES * STEPS
    assert len(manifest["shards"]) == -(-len(steps) // 16)
    lm_head = miniature.model.language_model.lm_head
    ar = Decoder(miniature.model)
    for step in steps[:3]:
        length = step["prompt_length"]
        assert step["input_embeds"].shape == (length, miniature.model.hidden_size)
        assert step["hidden"].shape == (length + ACTION_DIM - 1, miniature.model.hidden_size)
        # hidden state at position P - 1 + i predicts token i (fp32 storage keeps them exact)
        with torch.no_grad():
            assert lm_head(step["hidden"][length - 1:]).argmax(-1).tolist() == step["tokens"].tolist()
        instruction, frames = collect.synthetic_episode(500 + step["episode"], STEPS)
        tokens, _ = ar.decode(pixel_values(frames[step["step"]]), prompt_token_ids(miniature.tokenizer, instruction))
        assert tokens == step["tokens"].tolist() and step["instruction"] == instruction


def test_collect_from_an_image_directory(tmp_path):
    from PIL import Image
    for episode, instruction in (("ep0", "turn on the stove"), ("ep1", "put the bowl on the plate")):
        (tmp_path / "frames" / episode).mkdir(parents=True)
        for index, frame in enumerate(collect.synthetic_episode(len(instruction), 2, size=64)[1]):
            Image.fromarray(frame).save(tmp_path / "frames" / episode / f"{index:03d}.png")
    (tmp_path / "frames" / "instructions.json").write_text(json.dumps({"ep0": "turn on the stove"}))
    collect.main([str(tmp_path / "traces"), "--source", "images", "--images", str(tmp_path / "frames"),
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
    args = [*flags, "--kind", "llama", "--out", str(out), "--context", "8", "--steps", "300", "--batch-size", "16",
            "--lr", "3e-3", "--eval-every", "300", "--checkpoint-every", "60", "--val-fraction", "0.25"]
    for key, value in overrides.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    parser = train.argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args([str(traces), *args])


def test_training_beats_the_most_frequent_token(miniature, traces, tmp_path):
    training = train.train(train_args(traces, tmp_path / "draft"))
    baseline, validation = training["most_frequent_baseline"], training["val_accuracy"]
    assert len(validation) == len(baseline) == ACTION_DIM - 1
    assert np.mean(validation) > np.mean(baseline) + 0.05, (validation, baseline)
    config = json.loads((tmp_path / "draft" / "draft.json").read_text())
    assert config["training"]["val_accuracy"] == validation and config["verifier"] == miniature.name
    assert len(config["training"]["val_chain_accuracy"]) == ACTION_DIM - 1


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
    dataset = train.TraceDataset([traces], miniature, 0.25)
    draft = EagleDraft(head, miniature.model)
    action_rows = verifier_action_rows(miniature.model)
    compared = []
    for step in dataset.val:
        inputs, next_embeds, _, _ = dataset.batch(head, [step])
        with torch.no_grad():
            _, chained = train.predict(head, inputs, next_embeds, chain=True)
        expected = (action_logits(chained[0], action_rows).argmax(-1) + ACTION_TOKEN_MIN).tolist()
        draft.begin(step["hidden"][:step["prompt_length"]], step["input_embeds"])
        proposals = draft.propose(int(step["tokens"][0]), ACTION_DIM - 1)
        right = [p == t for p, t in zip(expected, step["tokens"][1:].tolist())] + [False]
        checked = right.index(False) + 1
        assert proposals[:checked] == expected[:checked]
        compared.append(checked)
    assert max(compared) > 1, "no chain got past its first proposal: nothing beyond step 1 compared"
