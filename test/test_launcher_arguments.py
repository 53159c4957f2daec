"""spec-vla-launch refuses what a node would refuse, in one line and exit 2, before any node
starts; --help shows every default."""
import pytest

from spec_vla_ros.ros import launch_config, launcher
from spec_vla_ros.commands import launch


def _run(argv):
    try:
        return launch.main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("argv, message", [
    (["libero_goal", "task_ids:=[12]"], "task_ids:=[12]: expected a non-empty list of LIBERO-GOAL task ids 0-9"),
    (["libero_goal", "episodes_per_task:=0"], "episodes_per_task:=0: expected 1-50"),
    (["libero_goal", "max_steps:=-3"], "max_steps:=-3"),
    (["libero_goal", "draft:=eagle"], "draft 'eagle' is unknown"),
    (["libero_goal", "verifier:=/no/such/openvla"], "'/no/such/openvla' does not exist"),
    (["hardware", "threads:=-1"], "threads must be an integer >= 0"),
    (["libero_goal", "drafts:=mamba"], "unknown launch argument(s) ['drafts']"),
    (["simulation"], "invalid choice: 'simulation'"),
])
def test_a_refused_setting_is_one_line_and_exit_2_before_any_node_starts(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(launcher, "Launcher", lambda *a, **k: pytest.fail("a node was started"))
    assert _run(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("spec-vla-launch: ") and message in error
    assert error.count("\n") == 1 and "Traceback" not in error


@pytest.mark.parametrize("argv", [["libero_goal", "--bogus-flag"], ["hardware", "draft:=history", "--bogus-flag"],
                                  ["--bogus-flag", "hardware"], ["hardware", "-x"]])
def test_an_unknown_option_is_one_line_saying_what_is_expected(argv, capsys):
    assert _run(argv) == 2
    error = capsys.readouterr().err
    unknown = next(item for item in argv if item.startswith("-"))
    assert error.startswith(f"spec-vla-launch: unknown option(s) {unknown}; expected spec-vla-launch ")
    assert "{hardware,libero_goal} [name:=value ...]" in error and "--log-dir" in error and "--print" in error
    assert error.count("\n") == 1


@pytest.mark.parametrize("content, message", [
    ("spec_vla_policy:\n  ros__parameters:\n    draft: [mamba\n",
     "is not valid YAML (while parsing a flow sequence at line 3, column 12: expected ',' or ']', but got "
     "'<stream end>' at line 4, column 1); expected a YAML mapping 'spec_vla_policy: {ros__parameters: "
     "{name: value, ...}}'"),
    ("spec_vla_policy:\n  ros__parameters:\n    draft: mamba\n   threads: 1\n", "at line 4, column 4"),
    ("- spec_vla_policy\n", "does not hold a YAML mapping 'spec_vla_policy: {ros__parameters: {name: value, ...}}'"),
    ("spec_vla_policy:\n  ros__parameters: [draft, mamba]\n", "does not hold a YAML mapping"),
    (None, "cannot be read (No such file or directory); expected a YAML mapping"),
], ids=["unclosed", "indentation", "a list", "parameters a list", "missing"])
def test_a_malformed_parameters_file_is_one_line_naming_place_and_layout(content, message, tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    if content is not None:
        params_file.write_text(content)
    assert _run(["hardware", f"params_file:={params_file}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"spec-vla-launch: parameters file {params_file} ") and message in error, error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_the_default_settings_pass_and_threads_reach_the_policy_node(capsys):
    assert _run(["libero_goal", "--print"]) == 0
    assert "threads" not in capsys.readouterr().out               # the parameters file's value (1) applies
    [policy] = [node for node in launch_config.resolve("libero_goal", {"threads": "0"}) if node.name == "spec_vla_policy"]
    assert policy.parameters["threads"] == 0 and launcher.node_settings(policy)["threads"] == 0
    [policy] = [node for node in launch_config.resolve("libero_goal", {}) if node.name == "spec_vla_policy"]
    assert launcher.node_settings(policy)["threads"] == 1


def test_help_shows_defaults(capsys):
    assert _run(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--log-dir LOG_DIR write each node's output to DIR/<node>.log (default: to this terminal)" in text
    assert "node graph to run" in text
