"""The policy node's configuration errors at start, as the README documents them: each ends the node
before any model loads with exit code 2 and one line, `[FATAL] [...] [spec_vla_policy]: invalid
configuration: <what is wrong>; ... expected ...`, and nothing else on its output (no rcl error line
beside it, no traceback).

Every case is a node process of its own, started as the runner and the launch files start it; all of
them start at once (a refused node setting or decoding field costs ~2 s of CPU, one that needs
the model stack, such as unnorm_key or a checkpoint, ~10 s)."""
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")

from ros_helpers import ros_environment  # noqa: E402
from spec_vla_ros.drafts.kinds import AR  # noqa: E402
from spec_vla_ros.ros.launch_config import ResolvedNode, config_dir  # noqa: E402
from spec_vla_ros.ros.launcher import node_command  # noqa: E402
from spec_vla_ros.ros.policy_node import NODE_NAME  # noqa: E402

pytestmark = pytest.mark.ros

TIMEOUT_S = 500                # every case at once on a busy 2-core machine (5 min measured, load 16)
PARAMS = str(config_dir() / "libero_goal.yaml")
MALFORMED_YAML = f"{NODE_NAME}:\n  ros__parameters:\n    draft: [mamba\n"
WRONG_TYPE = f"{NODE_NAME}:\n  ros__parameters:\n    control_hz: fast\n"

# name -> (how the command is made, what the one line must contain). Each line says what is expected,
# or, for a path that does not exist, names the path and says so.
CASES = {
    "malformed parameters file": (("params", MALFORMED_YAML, []), ["params.yaml", "line 3", "expected"]),
    "missing parameters file": (("missing", None, []), ["no_such_params.yaml", "expected"]),
    "unknown ROS argument": (("ros-args", None, ["--bogus-flag"]), ["--bogus-flag", "expected"]),
    "argument outside --ros-args": (("own-args", None, ["--bogus-flag"]), ["--bogus-flag", "expected"]),
    "malformed parameter override": (("ros-args", None, ["-p", "draft"]), ["-p draft", "expected"]),
    "parameter of the wrong type": (("params", WRONG_TYPE, []), ["control_hz", "expecting type 'DOUBLE'"]),
    "unknown draft": (("overrides", {"draft": "eagle"}, []), ["draft 'eagle'", "expected"]),
    "unknown acceptance rule": (("overrides", {"acceptance": "loose"}, []), ["acceptance 'loose'", "expected"]),
    "num_draft_tokens above 7": (("overrides", {"num_draft_tokens": 8}, []), ["num_draft_tokens", "expected"]),
    "num_draft_tokens 0 without a draft": (("overrides", {"draft": AR, "num_draft_tokens": 0}, []),
                                           ["num_draft_tokens", "expected"]),
    "unnorm_key not in the statistics": (("overrides", {"unnorm_key": "no_such_dataset"}, []),
                                         ["unnorm_key 'no_such_dataset'", "expected"]),
    "missing draft checkpoint": (("overrides", {"draft": "mamba", "draft_checkpoint": "/no/such/draft"}, []),
                                 ["'/no/such/draft' does not exist"]),
    "missing verifier": (("overrides", {"verifier": "/no/such/openvla"}, []), ["'/no/such/openvla' does not exist"]),
}


def command(how: tuple, directory: Path) -> list[str]:
    kind, value, extra = how
    params, overrides = PARAMS, {}
    if kind == "params":
        params = str(directory / "params.yaml")
        Path(params).write_text(value)
    elif kind == "missing":
        params = str(directory / "no_such_params.yaml")
    elif kind == "overrides":
        overrides = value
    made = node_command(ResolvedNode("policy_node", NODE_NAME, params, (), overrides))
    if kind == "own-args":                       # after the executable, before --ros-args
        return made[:1] + extra + made[1:]
    return made + extra                          # inside the --ros-args section


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    """name -> (exit code or None if it was still running, everything the node wrote)."""
    started = {}
    for name, (how, _) in CASES.items():
        directory = tmp_path_factory.mktemp(name.replace(" ", "_"))
        started[name] = subprocess.Popen(command(how, directory), env=ros_environment(), cwd=directory,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
    deadline, results = time.monotonic() + TIMEOUT_S, {}
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results[name] = (process.returncode, output)
        except subprocess.TimeoutExpired:
            process.kill()
            results[name] = (None, process.communicate()[0])
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_a_configuration_error_is_one_line_and_exit_2_before_any_model_loads(outcomes, name):
    code, output = outcomes[name]
    assert code == 2, f"{name}: exit code {code} (None: the node was still running), output:\n{output}"
    lines = output.strip().splitlines()
    assert len(lines) == 1, f"{name}: expected one line, got:\n{output}"
    [line] = lines
    assert line.startswith("[FATAL] [") and f"] [{NODE_NAME}]: invalid configuration: " in line, line
    for needed in CASES[name][1]:
        assert needed in line, f"{name}: {needed!r} not in {line!r}"
