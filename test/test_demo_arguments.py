"""`spec-vla-demo`'s command line, checked before any node starts (a full demo run takes ~40 s and is run by hand)."""
import shutil
from argparse import Namespace

import pytest

from spec_vla_ros.commands import demo
from spec_vla_ros.commands.write_miniature import main as write_miniature
from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A real-format directory that does not say it is the miniature (bf16, like the released ones)."""
    directory = tmp_path_factory.mktemp("models") / "openvla-7b-finetuned-libero-goal"
    write_miniature([str(directory), "--as-openvla", "--dtype", "bfloat16"])
    return directory


def arguments(**given):
    return Namespace(**{"verifier": "miniature", "draft": None, "draft_checkpoint": "", "acceptance": "strict",
                        "threads": 1, **given})


def test_stand_in_without_draft_uses_history_and_says_how_to_train(stand_in, monkeypatch):
    monkeypatch.chdir(stand_in.parent)                    # a relative path, as a user types it
    policy, note = demo.policy_arguments(arguments(verifier=stand_in.name))
    assert policy["verifier"] == str(stand_in) and policy["draft"] == "history" and policy["draft_checkpoint"] == ""
    assert "spec-vla-train-draft" in note and "--draft-checkpoint" in note and stand_in.name in note


def test_miniature_keeps_the_packaged_mamba(tmp_path, monkeypatch):
    policy, note = demo.policy_arguments(arguments())
    assert (policy["verifier"], policy["draft"], note) == ("miniature", "mamba", None)
    written = tmp_path / "written"
    write_miniature([str(written)])                       # a written miniature names itself: packaged drafts fit
    monkeypatch.chdir(tmp_path)
    policy, note = demo.policy_arguments(arguments(verifier="written"))
    assert (policy["verifier"], policy["draft"], note) == (str(written), "mamba", None)


def test_relative_draft_checkpoint_is_resolved_and_keeps_mamba(tmp_path, monkeypatch):
    shutil.copytree(PACKAGED_CHECKPOINTS, tmp_path / "drafts")
    monkeypatch.chdir(tmp_path)
    policy, note = demo.policy_arguments(arguments(draft_checkpoint="drafts"))
    assert policy["draft_checkpoint"] == str(tmp_path / "drafts") and policy["draft"] == "mamba" and note is None


@pytest.mark.parametrize("argv, message", [
    (["--draft", "mamba"], "needs draft_checkpoint"),                 # asked for explicitly: refused, not replaced
    (["--draft", "llama"], "needs draft_checkpoint"),
    (["--draft-checkpoint", "nowhere"], "nowhere"),
    (["--acceptance", "loose"], "acceptance 'loose'"),
    (["--task-id", "12"], "--task-id 12: LIBERO-GOAL task ids are 0-9"),    # the bridge would refuse it ~40 s in
    (["--task-id", "-1"], "--task-id -1"),
    (["--max-steps", "0"], "--max-steps 0"),
    (["--threads", "-1"], "threads must be an integer >= 0"),
    (["--task-id", "two"], "invalid int value: 'two'"),                    # argparse's own errors: one line too
])
def test_refused_settings_exit_2_before_any_node_starts(stand_in, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(stand_in.parent)
    monkeypatch.setattr(demo, "Launcher", lambda *a, **k: pytest.fail("a node was started"))
    try:
        code = demo.main(["--verifier", stand_in.name, *argv])
    except SystemExit as exit_:                        # argparse's errors leave through SystemExit
        code = exit_.code
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spec-vla-demo: ") and message in error and "\n" not in error
    assert "Traceback" not in error


def test_missing_relative_verifier_is_named_absolute(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--verifier", "models/openvla"]) == 2
    assert str(tmp_path / "models" / "openvla") in capsys.readouterr().err


def test_an_existing_output_directory_is_refused_before_any_node_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "Launcher", lambda *a, **k: pytest.fail("a node was started"))
    assert demo.main(["--output", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"spec-vla-demo: --output {tmp_path} exists; choose a new directory (the demo never overwrites a run)"


def test_a_failed_nodes_fatal_line_is_found_in_its_log(tmp_path):
    log = tmp_path / "libero_goal_bridge.log"
    log.write_text("[INFO] [1.0] [libero_goal_bridge]: starting\n"
                   "[FATAL] [2.0] [libero_goal_bridge]: task ids must be a non-empty list within 0..9, got [12]\n"
                   "\n")
    assert demo.fatal_lines(log) == ["[FATAL] [2.0] [libero_goal_bridge]: task ids must be a non-empty list "
                                     "within 0..9, got [12]"]
    log.write_text("Traceback (most recent call last):\n  ...\nRuntimeError: EGL is missing\n")
    assert demo.fatal_lines(log) == ["RuntimeError: EGL is missing"]          # no FATAL line: the last one
    assert demo.fatal_lines(tmp_path / "missing.log") == []


def test_threads_reach_the_policy_node_as_a_launch_argument():
    policy, _ = demo.policy_arguments(arguments(threads=0))
    assert policy["threads"] == "0"
    [node] = [node for node in demo.resolve("libero_goal", {**policy, "record": "false"})
              if node.name == "spec_vla_policy"]
    assert node.parameters["threads"] == 0


def test_the_starting_line_is_printed_once_when_output_is_not_a_terminal(capsys):
    progress = demo.Progress.__new__(demo.Progress)          # no ROS: only the printing
    progress.max_steps, progress.started, progress.interactive = 10, 0.0, False
    progress.actions, progress.passes, progress.total_ms = 0, 0, 0.0
    progress._last_line, progress._starting_shown = 0.0, False
    for _ in range(7):                                        # ~70 s of loading, a line due every 10 s
        progress._last_line = float("-inf")
        progress._show()
    progress.actions, progress.passes, progress.total_ms = 2, 7, 300.0
    progress._last_line = float("-inf")
    progress._show()
    lines = capsys.readouterr().out.splitlines()
    assert [("starting" in line) for line in lines] == [True, False]
    assert "step 2/10: 2.00 tokens per verifier pass, 150 ms per action" in lines[1]
