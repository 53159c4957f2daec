"""Fine-tuning an OpenVLA-architecture verifier on LIBERO-layout demonstrations (training/finetune.py,
training/demonstrations.py): the HDF5 layout read as LIBERO writes it; the statistics and action
tokens are OpenVLA's (q01/q99 of the dataset, BOUNDS_Q99 normalization, 256 bins) on fresh random
actions; the training pass is the verifier's own prefill; the loss falls and the written directory
loads through the package's loader and acts; an interrupted run resumes to the weights of an
uninterrupted one; frozen parts stay frozen. A tiny verifier (patch 28, widths 32/64) keeps it fast."""
import json

import h5py
import numpy as np
import pytest
import torch

from spec_vla_ros.commands.finetune import build_parser, main
from spec_vla_ros.training.arguments import CommandError
from spec_vla_ros.training.demonstrations import DemonstrationError, DemonstrationFile
from spec_vla_ros.training.finetune import TRAIN_STATE, Frames, action_logits, finetune
from spec_vla_ros.vla.action_tokenizer import (actions_to_token_ids, load_norm_stats, token_ids_to_actions)
from spec_vla_ros.vla.checkpoint import LoadedVerifier, load_checkpoint, write_checkpoint
from spec_vla_ros.vla.compact import build_word_tokenizer
from spec_vla_ros.vla.constants import (ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, BIN_EDGES, PAD_TOKEN_ID, PADDED_VOCAB_SIZE,
                                        PROMPT_TEMPLATE)
from spec_vla_ros.vla.gripper import gripper_opens
from spec_vla_ros.vla.miniature import MINIATURE_NORMALIZATION
from spec_vla_ros.vla.model import OpenVLA, VLAConfig
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import VerifierSession

INSTRUCTIONS = ("put the bowl on the plate", "turn on the stove")
TINY_TEXT = {"vocab_size": PADDED_VOCAB_SIZE, "pad_token_id": PAD_TOKEN_ID, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
             "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
TINY_VISION = ({"patch_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2, "init_values": 0.1, "reg_tokens": 4,
                "no_embed_class": True},
               {"patch_size": 28, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0,
                "class_token": False, "global_pool": "map"})


def write_libero_file(path, instruction, episodes, convention="opengl", bddl_file=None):
    """A demonstration file as LIBERO's create_dataset.py writes one (episodes: (actions, upright images));
    `bddl_file`: the task's BDDL file named in env_args (None: none named)."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_kitchen_tabletop_manipulation",
                                                 "domain_name": "robosuite", "language_instruction": instruction})
        env_args = {"type": 1, "env_name": "Libero_Kitchen_Tabletop_Manipulation"}
        if bddl_file is not None:
            env_args["bddl_file"] = bddl_file
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["macros_image_convention"] = convention
        data.attrs["num_demos"] = len(episodes)
        for index, (actions, images) in enumerate(episodes):
            demo = data.create_group(f"demo_{index}")
            demo.create_dataset("actions", data=actions)
            stored = images[:, ::-1, ::-1] if convention == "opengl" else images
            demo.create_dataset("obs/agentview_rgb", data=np.ascontiguousarray(stored))
            demo.create_dataset("dones", data=np.eye(1, len(actions), len(actions) - 1, dtype=np.uint8)[0])
    return path


def random_episode(rng, length, size=32):
    """LIBERO-convention actions (pose deltas, gripper -1 open / +1 close) and smooth random images."""
    actions = np.concatenate([rng.uniform(-0.9, 0.9, (length, 3)), rng.uniform(-0.2, 0.3, (length, 3)),
                              rng.choice([-1.0, 1.0], (length, 1))], axis=1)
    coarse = rng.integers(0, 256, (length, 4, 4, 3)).astype(np.uint8)
    images = coarse.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    return actions, images


@pytest.fixture(scope="module")
def tiny_verifier(tmp_path_factory):
    """A tiny OpenVLA-architecture verifier written as an OpenVLA directory (fine-tuning's --init)."""
    torch.manual_seed(0)
    model = OpenVLA(VLAConfig(text_config=dict(TINY_TEXT), vision_overrides=TINY_VISION)).eval()
    tokenizer = build_word_tokenizer((PROMPT_TEMPLATE.format(instruction=""), *INSTRUCTIONS))
    verifier = LoadedVerifier(model, tokenizer, {"libero_goal": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}},
                              "tiny", MINIATURE_NORMALIZATION)
    return write_checkpoint(verifier, tmp_path_factory.mktemp("tiny"), as_openvla=True)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """Two tasks, three short episodes each (the last one of each held out)."""
    rng = np.random.default_rng(7)
    directory = tmp_path_factory.mktemp("demos")
    for index, instruction in enumerate(INSTRUCTIONS):
        write_libero_file(directory / f"task{index}_demo.hdf5", instruction,
                          [random_episode(rng, 3) for _ in range(3)])
    return directory


@pytest.fixture(scope="module")
def task_demos(tmp_path_factory):
    """Two tasks whose actions depend on the instruction only (one action each, every dimension of
    opposite sign), three episodes of two frames each: learnable in a few dozen steps."""
    rng = np.random.default_rng(11)
    directory = tmp_path_factory.mktemp("task_demos")
    for index, instruction in enumerate(INSTRUCTIONS):
        task_action = (1.0 - 2 * index) * np.concatenate([rng.uniform(0.2, 0.9, 6), [1.0]])
        episodes = [(np.tile(task_action, (2, 1)), random_episode(rng, 2)[1]) for _ in range(3)]
        write_libero_file(directory / f"task{index}_demo.hdf5", instruction, episodes)
    return directory


def arguments(demos, out, init, *extra):
    return build_parser().parse_args([str(demos), "--out", str(out), "--init", str(init), "--batch-size", "4",
                                      "--lr", "3e-3", "--val-fraction", "0.3", *extra])


@pytest.mark.parametrize("bddl_file, expected", [
    ("/libero/bddl_files/libero_goal/put_the_bowl_on_top_of_the_cabinet.bddl", "put the bowl on top of the cabinet"),
    ("libero_90/KITCHEN_SCENE10_put_the_black_bowl_in_the_top_drawer_of_the_cabinet.bddl",
     "put the black bowl in the top drawer of the cabinet"),
    (None, "put the bowl on the top of the drawer")])
def test_the_instruction_is_the_tasks_language_as_openvla_trained_and_evaluates(tmp_path, rng, bddl_file, expected):
    """LIBERO's problem_info holds the BDDL's own words, which differ from the task's language for 5
    of LIBERO-GOAL's 10 tasks; OpenVLA's data and evaluation use the task's language (from its BDDL
    file's name), so the reader does too, and problem_info only when no BDDL file is named."""
    actions, images = random_episode(rng, 4)
    path = write_libero_file(tmp_path / "a.hdf5", "put the bowl on the top of the drawer", [(actions, images)],
                             bddl_file=bddl_file)
    assert DemonstrationFile(path).instruction == expected


def test_the_reader_takes_libero_files_as_they_are(tmp_path, rng):
    actions, images = random_episode(rng, 5)
    actions[1, 2] = np.nan                                    # a frame without a usable action: skipped, counted
    path = write_libero_file(tmp_path / "a.hdf5", "Open the drawer", [(actions[:4], images)])
    demo, = (file := DemonstrationFile(path)).demonstrations
    assert demo.instruction == "Open the drawer" and demo.skipped == 2       # frame 1 (NaN) and 4 (no action)
    assert demo.frames.tolist() == [0, 2, 3]
    for row, frame in enumerate(demo.frames):
        assert np.array_equal(file.frame(demo.key, frame), images[frame])   # upright again
        assert np.allclose(demo.actions[row, :6], actions[frame, :6])
        assert demo.actions[row, 6] == (1.0 if actions[frame, 6] < 0 else 0.0)   # OpenVLA's 1 = open
    upright = DemonstrationFile(write_libero_file(tmp_path / "b.hdf5", "x", [(actions, images)], "opencv"))
    assert np.array_equal(upright.frame("demo_0", 0), images[0])
    with h5py.File(tmp_path / "c.hdf5", "w") as f:
        f.create_group("data").create_group("demo_0")
    with pytest.raises(DemonstrationError, match="problem_info"):
        DemonstrationFile(tmp_path / "c.hdf5")
    (tmp_path / "d.hdf5").write_text("not hdf5")
    with pytest.raises(DemonstrationError, match="not a readable HDF5 file"):
        DemonstrationFile(tmp_path / "d.hdf5")


def test_statistics_and_tokens_are_openvlas_on_fresh_random_actions(tmp_path):
    seed = np.random.SeedSequence().entropy
    rng = np.random.default_rng(seed)
    episodes = [random_episode(rng, int(rng.integers(5, 40))) for _ in range(int(rng.integers(2, 6)))]
    for actions, _ in episodes:
        actions[:, 4] = 0.25                                  # an unused dimension: min == max
    write_libero_file(tmp_path / "demo.hdf5", INSTRUCTIONS[0], episodes)
    frames = Frames.read([tmp_path / "demo.hdf5"], 0.0, 10)
    libero = np.concatenate([actions for actions, _ in episodes])
    # OpenVLA: libero_dataset_transform, then get_dataset_statistics on float32, then BOUNDS_Q99
    actions = np.concatenate([libero[:, :6], 1 - np.clip(libero[:, 6:], 0, 1)], axis=1).astype(np.float32)
    q01, q99 = np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0)
    assert np.array_equal(frames.statistics.q01, q01) and np.array_equal(frames.statistics.q99, q99), seed
    mask = np.array([True] * 6 + [False])
    normalized = np.where(mask, np.clip(2 * (actions - q01) / (q99 - q01 + np.float32(1e-8)) - 1, -1, 1), actions)
    normalized[:, 4] = 0.0
    assert np.array_equal(frames.tokens, actions_to_token_ids(normalized)), seed
    assert frames.tokens.min() >= ACTION_TOKEN_MIN and frames.tokens.max() <= ACTION_TOKEN_MAX
    # the loader's statistics de-normalize the tokens back to the actions, within a bin
    stats = frames.statistics.norm_stats("libero_goal")
    decoded = stats.unnormalize(token_ids_to_actions(frames.tokens))
    bin_width = (q99 - q01) * (BIN_EDGES[1] - BIN_EDGES[0]) / 2
    pose = [0, 1, 2, 3, 5]
    error = np.abs(decoded[:, pose] - np.clip(actions[:, pose], q01[pose], q99[pose]))
    assert np.all(error <= bin_width[pose] / 2 + 1e-5), seed                  # half a bin
    assert np.all(decoded[:, 4] == pytest.approx(q01[4], abs=1e-6)), seed     # the unused dimension's value
    assert [gripper_opens(token) for token in frames.tokens[:, 6]] == (libero[:, 6] < 0).tolist(), seed


def test_the_training_pass_is_the_verifiers_prefill(tiny_verifier, demos):
    """Teacher-forced logits of a padded batch equal the verifier's prefill with the action as proposals."""
    verifier = load_checkpoint(tiny_verifier)
    frames = Frames.read([demos], 0.0, 10)
    chosen = [0, len(frames.where) - 1]                        # two instructions: two prompt lengths
    pixels = torch.stack([pixel_values(frames.image(i), normalization=verifier.image_normalization) for i in chosen])
    prompts = [prompt_token_ids(verifier.tokenizer, frames.instructions[i]) for i in chosen]
    assert len(prompts[0]) != len(prompts[1])
    labels = torch.from_numpy(frames.tokens[chosen])
    with torch.no_grad():
        logits = action_logits(verifier.model, verifier.model.vision_backbone(pixels), prompts, labels)
    for row in range(2):
        step = VerifierSession(verifier.model).prefill(pixels[row], prompts[row], labels[row, :6].tolist())
        torch.testing.assert_close(logits[row], step.logits, atol=1e-4, rtol=1e-4)


def test_loss_falls_and_the_directory_loads_and_acts(tiny_verifier, task_demos, tmp_path):
    from spec_vla_ros.policy import PolicyConfig, VLAPolicy

    out = tmp_path / "out"
    record = finetune(arguments(task_demos, out, tiny_verifier, "--steps", "40", "--eval-every", "10", "--lr", "1e-2"))
    losses = [entry["train_loss"] for entry in record["history"]]
    assert losses[-1] < 0.2 * losses[0], losses
    assert len(record["history"][-1]["val_exact"]) == 7 and record["dataset"]["val_episodes"] == 2
    frames = Frames.read([task_demos], 0.3, 512)
    last = record["history"][-1]
    by_task = last["val_by_task"]                              # the pooled figures split by instruction
    assert set(by_task) == {frames.instructions[int(frame)] for frame in frames.val} and len(by_task) == 2
    assert sum(task["frames"] for task in by_task.values()) == len(frames.val)
    pooled = sum(task["frames"] * task["val_loss"] for task in by_task.values()) / len(frames.val)
    assert pooled == pytest.approx(last["val_loss"], abs=1e-3)
    for dimension in range(7):
        pooled = sum(task["frames"] * task["val_exact"][dimension] for task in by_task.values()) / len(frames.val)
        assert pooled == pytest.approx(last["val_exact"][dimension], abs=1e-3)
    assert json.loads((out / "dataset_statistics.json").read_text()) == {
        "libero_goal": json.loads(json.dumps(frames.statistics.to_json_entry()))}
    policy = VLAPolicy(PolicyConfig(verifier=str(out), draft="ar"))
    assert policy.verifier.name == "out"
    frame = int(frames.train[0])
    action, stats = policy.act(frames.image(frame), frames.instructions[frame])
    assert len(stats.tokens) == 7 and np.all(np.isfinite(action))
    assert np.allclose(action, load_norm_stats(out).unnormalize(token_ids_to_actions(stats.tokens)))
    model = policy.verifier.model
    for frame in frames.val:                                   # held-out episodes of the same two actions
        image, instruction = frames.image(int(frame)), frames.instructions[int(frame)]
        tokens, _ = policy.decode(image, instruction)
        assert tokens[:6] == frames.tokens[frame, :6].tolist()   # the pose is learned (the gripper comes later)
        with torch.no_grad():                                  # and AR decoding is what training's pass predicts
            pixels = pixel_values(image, normalization=policy.verifier.image_normalization)
            features = model.vision_backbone(pixels[None])
            logits = action_logits(model, features, [prompt_token_ids(policy.verifier.tokenizer, instruction)],
                                   torch.tensor([tokens]))
        assert logits[0].argmax(-1).tolist() == tokens


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_verifier, demos, tmp_path):
    extra = ("--steps", "4", "--checkpoint-every", "2", "--eval-every", "2")
    finetune(arguments(demos, tmp_path / "whole", tiny_verifier, *extra))
    stopped = finetune(arguments(demos, tmp_path / "parts", tiny_verifier, *extra), stop_at_step=2)
    assert stopped["step"] == 2
    main([str(demos), "--out", str(tmp_path / "parts"), "--init", str(tiny_verifier), "--batch-size", "4",
          "--lr", "3e-3", "--val-fraction", "0.3", *extra])
    whole, parts = (torch.load(tmp_path / name / TRAIN_STATE, weights_only=False) for name in ("whole", "parts"))
    assert whole["record"]["step"] == parts["record"]["step"] == 4
    for key, tensor in whole["model"].items():
        assert torch.equal(tensor, parts["model"][key]), key
    assert [entry["val_loss"] for entry in whole["record"]["history"]] == \
        [entry["val_loss"] for entry in parts["record"]["history"]]
    exported = load_checkpoint(tmp_path / "parts").model.state_dict()
    assert all(torch.equal(tensor, exported[key]) for key, tensor in whole["model"].items())
    with pytest.raises(CommandError, match="lr 0.001 vs. 0.003"):
        finetune(build_parser().parse_args([str(demos), "--out", str(tmp_path / "parts"), "--init", str(tiny_verifier),
                                            "--batch-size", "4", "--lr", "1e-3", "--val-fraction", "0.3", *extra]))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("")
    with pytest.raises(CommandError, match=f"no {TRAIN_STATE} to resume"):
        finetune(arguments(demos, tmp_path / "other", tiny_verifier))


def test_frozen_parts_stay_as_they_were(tiny_verifier, demos, tmp_path):
    """Vision frozen (features cached) and only the lm_head's action rows among the head's rows."""
    finetune(arguments(demos, tmp_path / "out", tiny_verifier, "--steps", "3", "--train", "projector,action-rows"))
    before = load_checkpoint(tiny_verifier).model.state_dict()
    after = load_checkpoint(tmp_path / "out").model.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"language_model.lm_head.weight"} | {k for k in before if k.startswith("projector.")}
    head_before, head_after = before["language_model.lm_head.weight"], after["language_model.lm_head.weight"]
    rows = slice(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1)
    assert not torch.equal(head_before[rows], head_after[rows])
    assert torch.equal(head_before[:ACTION_TOKEN_MIN], head_after[:ACTION_TOKEN_MIN])
    assert torch.equal(head_before[ACTION_TOKEN_MAX + 1:], head_after[ACTION_TOKEN_MAX + 1:])
    with pytest.raises(CommandError, match="lm-head already trains the action rows"):
        finetune(arguments(demos, tmp_path / "again", tiny_verifier, "--train", "lm-head,action-rows"))
