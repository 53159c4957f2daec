"""spec-vla-collect and spec-vla-train-draft on the real-checkpoint path, with the real-format
stand-in that spec-vla-write-miniature writes: compact prompt-window traces, training that reads
two tensors of the checkpoint and never builds the verifier, the verifier inferred from the
traces, relative paths, and one-line failures."""
import argparse
import json
import os
import shlex

import pytest
import torch

from spec_vla_ros.drafts.checkpoints import load_head
from spec_vla_ros.drafts.registry import resolve
from spec_vla_ros.commands import collect as collect_command
from spec_vla_ros.commands import train_draft
from spec_vla_ros.training import collect, train
from spec_vla_ros.training.collect import Trace, TraceWriter
from spec_vla_ros.vla import checkpoint as vla_checkpoint
from spec_vla_ros.vla import miniature as vla_miniature
from spec_vla_ros.vla import model as vla_model
from spec_vla_ros.vla import verifiers as vla_verifiers
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MIN

STAND_IN = "openvla-7b-finetuned-libero-goal"      # a directory that does not say it is the miniature


def fresh_seed() -> int:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed {seed}")                      # pytest shows it when the test fails
    return seed


@pytest.fixture(scope="module")
def models(miniature, tmp_path_factory):
    """models/openvla-7b-finetuned-libero-goal (its name taken from the directory, as a real
    checkpoint's is) and models/written (still named miniature-seed0), both in the HF layout."""
    root = tmp_path_factory.mktemp("models")
    vla_checkpoint.write_checkpoint(miniature, root / "written")
    stand_in = vla_checkpoint.write_checkpoint(miniature, root / STAND_IN)
    config = json.loads((stand_in / "config.json").read_text())
    config["spec_vla_ros"].pop("name")
    (stand_in / "config.json").write_text(json.dumps(config, indent=2))
    return root


def random_traces(directory, verifier, episodes: int, steps: int, seed: int, context=16, prompt_lengths=(40,)):
    """Traces in spec-vla-collect's format with random features (no verifier run)."""
    generator = torch.Generator().manual_seed(seed)
    hidden_size = verifier.model.hidden_size
    writer = TraceWriter(directory, verifier, {"test": "random"}, shard_steps=8, context=context,
                         verifier_path="miniature")
    for episode in range(episodes):
        for step in range(steps):
            length = prompt_lengths[(episode + step) % len(prompt_lengths)]
            tokens = (ACTION_TOKEN_MIN + torch.randint(0, 256, (ACTION_DIM,), generator=generator)).tolist()
            writer.add(Trace(tokens, torch.randn(length + ACTION_DIM - 1, hidden_size, generator=generator),
                             torch.randn(length, hidden_size, generator=generator)), episode, step, "open the drawer")
    return writer.close()


def parse_train(argv: str):
    parser = argparse.ArgumentParser()
    train_draft.add_arguments(parser)
    return parser.parse_args(shlex.split(argv))


def test_traces_keep_only_the_prompt_window(miniature, tmp_path):
    """Stored: the last context + 1 prompt positions and the action positions, in fp16; the
    bytes on disk per step are those rows and the tokens, with a small header."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    context = int(torch.randint(1, 30, (), generator=generator))
    lengths = torch.randint(2, 60, (6,), generator=generator).tolist()
    directory = random_traces(tmp_path / "t", miniature, 6, 1, seed, context, lengths)
    manifest, steps = collect.read_traces(directory)
    hidden_size, rows = miniature.model.hidden_size, 0
    for step, length in zip(steps, lengths):
        window = min(length, context + 1)
        assert (step["prompt_length"], step["window"]) == (length, window)
        assert step["hidden"].shape == (window + ACTION_DIM - 1, hidden_size)
        assert step["input_embeds"].shape == (window, hidden_size) and step["hidden"].dtype == torch.float16
        rows += 2 * window + ACTION_DIM - 1
    payload = 2 * hidden_size * rows + 8 * ACTION_DIM * len(steps)
    on_disk = sum((directory / name).stat().st_size for name in manifest["shards"])
    assert payload <= on_disk < payload + 300 * len(steps)


def test_the_window_is_the_tail_of_the_trace(miniature):
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    length = int(torch.randint(20, 60, (), generator=generator))
    context = int(torch.randint(1, 18, (), generator=generator))
    trace = Trace(list(range(ACTION_DIM)), torch.randn(length + ACTION_DIM - 1, 8, generator=generator),
                  torch.randn(length, 8, generator=generator))
    window = collect.prompt_window(trace, context)
    assert window.prompt_length == context + 1
    assert torch.equal(window.hidden, trace.hidden[length - 1 - context:])
    assert torch.equal(window.input_embeds, trace.input_embeds[length - 1 - context:])
    assert collect.prompt_window(trace, None) is trace


def test_old_traces_stay_readable_and_unknown_versions_are_refused(miniature, tmp_path):
    directory = random_traces(tmp_path / "old", miniature, 2, 2, fresh_seed(), context=None)
    manifest = json.loads((directory / collect.MANIFEST).read_text())
    for key in ("format_version", "prompt_window", "verifier_path"):       # as spec-vla-collect wrote them before
        manifest.pop(key)
    for entry in manifest["steps"]:
        entry.pop("window")
    (directory / collect.MANIFEST).write_text(json.dumps(manifest))
    read, steps = collect.read_traces(directory)
    assert read["prompt_window"] is None and all(s["window"] == s["prompt_length"] == 40 for s in steps)
    dataset = train.TraceDataset([directory], train.VerifierParts.of(miniature), 0.0)
    dataset.check_context(None)                     # every prompt position is there
    manifest["format_version"] = 3
    (directory / collect.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(collect.TraceError, match="recollect"):
        collect.read_traces(directory)


def test_a_head_wider_than_the_window_is_refused(miniature, tmp_path):
    directory = random_traces(tmp_path / "t", miniature, 2, 1, fresh_seed(), context=8)
    dataset = train.TraceDataset([directory], train.VerifierParts.of(miniature), 0.0)
    dataset.check_context(8)
    for context in (9, None):
        with pytest.raises(train.CommandError, match="--context 8 or less"):
            dataset.check_context(context)


def test_training_reads_two_tensors_and_never_builds_the_verifier(miniature, models, tmp_path, monkeypatch):
    """From the written directory, with every way of building a verifier disabled, training gives
    the head that training with the built verifier gives (same seed)."""
    traces = random_traces(tmp_path / "traces", miniature, 4, 2, fresh_seed())
    settings = "--kind llama --context 8 --steps 3 --batch-size 4 --eval-every 3 --val-fraction 0.25"
    built = train.train(parse_train(f"{traces} {settings} --out {tmp_path / 'built'}"),
                        train.VerifierParts.of(miniature))

    def refuse(*args, **kwargs):
        raise AssertionError("training built the verifier")

    for module, name in ((vla_verifiers, "load_verifier"), (vla_checkpoint, "load_checkpoint"),
                         (vla_miniature, "build_miniature")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(train, "build_miniature", refuse)
    monkeypatch.setattr(vla_model.OpenVLA, "__init__", refuse)
    read, original = [], train.read_tensor
    monkeypatch.setattr(train, "read_tensor", lambda *a, **k: read.append(a[1]) or original(*a, **k))
    from_files = train.train(parse_train(f"{traces} {settings} --out {tmp_path / 'read'} "
                                         f"--verifier {models / 'written'}"))
    assert sorted(read) == ["language_model.lm_head.weight", "language_model.model.embed_tokens.weight"]
    assert from_files["val_accuracy"] == built["val_accuracy"]
    expected, _ = load_head(tmp_path / "built")
    head, config = load_head(tmp_path / "read")
    assert config["verifier"] == miniature.name
    for key, value in expected.state_dict().items():
        assert torch.equal(head.state_dict()[key], value), key


def test_read_tensor_reads_rows_and_names_a_broken_file(miniature, models, tmp_path):
    from spec_vla_ros.vla.tensors import LM_HEAD, read_tensor
    rows = read_tensor(models / "written", LM_HEAD, rows=slice(ACTION_TOKEN_MIN, ACTION_TOKEN_MIN + 256))
    assert torch.equal(rows, miniature.model.language_model.lm_head.weight[ACTION_TOKEN_MIN:ACTION_TOKEN_MIN + 256])
    broken = tmp_path / "broken"
    vla_checkpoint.write_checkpoint(miniature, broken)
    index = json.loads((broken / vla_checkpoint.WEIGHTS_INDEX).read_text())
    shard = broken / index["weight_map"][LM_HEAD]
    shard.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")     # a git-lfs pointer
    with pytest.raises(vla_checkpoint.CheckpointError, match=shard.name):
        read_tensor(broken, LM_HEAD)


def test_autocast_training_runs(miniature, tmp_path):
    traces = random_traces(tmp_path / "traces", miniature, 3, 2, fresh_seed())
    for dtype in ("bfloat16", "float16"):
        args = parse_train(f"{traces} --kind mamba --carry --steps 2 --batch-size 4 --eval-every 2 "
                           f"--dtype {dtype} --out {tmp_path / dtype}")
        train.train(args, train.VerifierParts.of(miniature))
        head, config = load_head(tmp_path / dtype)
        assert config["training"]["dtype"] == dtype
        assert all(bool(p.isfinite().all()) for p in head.parameters())


def test_collect_passes_the_checkpoints_image_normalization(miniature, tmp_path, monkeypatch):
    seen = []
    original = collect.pixel_values
    monkeypatch.setattr(collect, "pixel_values",
                        lambda *a, **k: seen.append(k.get("normalization")) or original(*a, **k))
    writer = TraceWriter(tmp_path / "t", miniature, {"test": "normalization"})
    collector = collect.Collector(miniature, writer)
    collector.new_episode()
    collector(collect.synthetic_episode(1, 1, size=64)[1][0], "open the drawer")
    assert seen == [miniature.image_normalization]


def test_readme_reproduce_commands_on_the_stand_in(models, tmp_path, monkeypatch, capsys):
    """The README's "reproduce with a real checkpoint" commands, run as a user runs them from their
    own directory with relative paths (CPU here, `--source synthetic` for LIBERO, and few steps):
    train-draft takes the verifier from the traces' manifest, and the draft is accepted for it."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    verifier = os.path.relpath(models / STAND_IN, work)
    collect_command.main(shlex.split(f"runs/traces/real --verifier {verifier} --device cpu --dtype auto "
                             "--source synthetic --episodes 3 --steps-per-episode 2 --threads 1"))
    manifest = json.loads((work / "runs/traces/real" / collect.MANIFEST).read_text())
    assert manifest["verifier"] == STAND_IN and manifest["verifier_path"] == str(models / STAND_IN)
    monkeypatch.chdir(work / "runs")                # relative to wherever the caller is
    for kind, flags in (("mamba", "--layers 2 --carry"), ("llama", "")):
        train_draft.main(shlex.split(f"traces/real --kind {kind} {flags} --out drafts/{kind}-real --device cpu "
                               "--threads 1 --steps 2 --batch-size 4 --eval-every 2"))
        resolve(kind, str(work / f"runs/drafts/{kind}-real"), str(models / STAND_IN))
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("case", ["verifier contradicts", "missing traces", "existing out", "bad device",
                                  "zero steps", "collect into traces", "missing verifier", "images without dir"])
def test_expected_failures_are_one_line(case, miniature, models, tmp_path, monkeypatch, capsys):
    traces = random_traces(tmp_path / "traces", miniature, 2, 1, 0)
    (tmp_path / "draft").mkdir()
    (tmp_path / "draft" / "draft.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    command, argv, message = {
        "verifier contradicts": (train_draft.main, f"traces --kind llama --out new --verifier {models / STAND_IN}",
                                 "leave --verifier out"),
        "missing traces": (train_draft.main, "no-traces --kind llama --out new", "no manifest.json"),
        "existing out": (train_draft.main, "traces --kind llama --out draft", "not empty"),
        "bad device": (train_draft.main, "traces --kind llama --out new --device gpu", "cpu, cuda or cuda:N"),
        "zero steps": (train_draft.main, "traces --kind llama --out new --steps 0", "--steps 0"),
        "collect into traces": (collect_command.main, "traces --episodes 1", "not empty"),
        "missing verifier": (collect_command.main, "new --verifier no-such-checkpoint", "no-such-checkpoint"),
        "images without dir": (collect_command.main, "new --source images", "--images"),
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        command(shlex.split(argv))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(error.strip().splitlines()) == 1 and message in error and "Traceback" not in error, error
    assert traces.is_dir() and not (tmp_path / "new").exists()


def test_windowed_traces_replay_as_whole_ones(miniature, tmp_path):
    """The harness replays a prompt window exactly as the whole prompt for a head that reads no
    more than the window: same proposals, same accepted tokens."""
    from spec_vla_ros.analysis import harness
    from spec_vla_ros.decoding.acceptance import Acceptance
    from spec_vla_ros.drafts.registry import load_draft

    seed = fresh_seed()
    whole = random_traces(tmp_path / "whole", miniature, 2, 3, seed, context=None)
    window = random_traces(tmp_path / "window", miniature, 2, 3, seed, context=16)
    results = []
    for directory in (whole, window):
        episodes, _ = harness.trace_episodes(directory, miniature)
        draft, proposed = load_draft("mamba", "", miniature), []      # packaged: context 16, carries its state
        propose = draft.propose
        draft.propose = lambda *args: proposed.append(propose(*args)) or proposed[-1]
        accuracy = harness.token_accuracy(draft, episodes)
        decoded = harness.replay(draft, episodes, miniature.model, 4, Acceptance())
        results.append((accuracy, proposed, [(tokens, stats.verifier_passes) for tokens, stats in decoded]))
    assert len(results[0][1]) > 2 * ACTION_DIM and results[0] == results[1]
