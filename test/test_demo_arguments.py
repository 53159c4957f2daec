"""`spec-vla-demo`'s command line, checked before any node starts (a full demo run takes ~40 s and is run by hand)."""
import shutil
from argparse import Namespace

import pytest

from spec_vla_ros import demo
from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS
from spec_vla_ros.vla.checkpoint import main as write_miniature


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A real-format directory that does not say it is the miniature (bf16, like the released ones)."""
    directory = tmp_path_factory.mktemp("models") / "openvla-7b-finetuned-libero-goal"
    write_miniature([str(directory), "--as-openvla", "--dtype", "bfloat16"])
    return directory


def arguments(**given):
    return Namespace(**{"verifier": "miniature", "draft": None, "draft_checkpoint": "", "acceptance": "strict",
                        **given})


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
])
def test_refused_settings_exit_2_before_any_node_starts(stand_in, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(stand_in.parent)
    monkeypatch.setattr(demo, "Launcher", lambda *a, **k: pytest.fail("a node was started"))
    assert demo.main(["--verifier", stand_in.name, *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spec-vla-demo: ") and message in error and "\n" not in error


def test_missing_relative_verifier_is_named_absolute(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--verifier", "models/openvla"]) == 2
    assert str(tmp_path / "models" / "openvla") in capsys.readouterr().err
