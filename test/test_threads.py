"""The `threads` setting: one meaning (torch intra-op threads, 0 = torch's default) and one
default for the policy node, its launch argument, its parameters files and every command that
runs the model."""
import pytest
import torch
import yaml

from spec_vla_ros.ros import launch_config
from spec_vla_ros.commands.benchmarks import verifier as verifier_benchmark
from spec_vla_ros.vla.threads import DEFAULT_THREADS, apply_threads, check_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_applied_and_zero_keeps_torchs_default(restore_threads):
    torch.set_num_threads(2)
    assert apply_threads(0) == 2                   # 0: leave torch's setting alone
    assert apply_threads(1) == 1 == torch.get_num_threads()


@pytest.mark.parametrize("value", [-1, 1.5, "2", True, None])
def test_invalid_thread_counts_are_refused_with_the_reason(value):
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        check_threads(value)


def test_the_policy_node_the_launch_files_and_the_commands_share_one_default():
    from spec_vla_ros.ros import policy_node
    from spec_vla_ros.ros.node_parameters import defaults
    from spec_vla_ros.ros.policy_parameters import POLICY_PARAMETERS
    threads = POLICY_PARAMETERS["threads"]
    assert threads.default == DEFAULT_THREADS == 1 and "0 = torch's default" in threads.description
    assert threads.read_only
    with pytest.raises(ValueError, match="threads"):
        policy_node.check_node_settings({**defaults(POLICY_PARAMETERS), "threads": -1})
    for name in ("libero_goal", "hardware"):
        configuration = launch_config.CONFIGURATIONS[name]
        assert "threads" in {argument.name for argument in configuration.arguments}
        document = yaml.safe_load((launch_config.config_dir() / configuration.params_file).read_text())
        assert document["spec_vla_policy"]["ros__parameters"]["threads"] == DEFAULT_THREADS
    import argparse
    parser = argparse.ArgumentParser()
    verifier_benchmark.add_arguments(parser)
    assert parser.parse_args([]).threads == DEFAULT_THREADS


def test_bench_verifier_fails_in_one_line_for_a_missing_checkpoint(capsys, tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    verifier_benchmark.add_arguments(parser)
    with pytest.raises(SystemExit) as exit_:
        verifier_benchmark.run(parser.parse_args(["--verifier", str(tmp_path / "missing"), "--actions", "1"]))
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error == f"spec-vla-bench verifier: verifier checkpoint directory '{tmp_path / 'missing'}' does not exist\n"
