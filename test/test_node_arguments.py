"""ros/node_arguments.py: what rcl would refuse on a node's command line is found before rclpy.init,
as one line naming what was wrong and what is expected, and nothing is printed meanwhile (rcl
itself logs an extra `[ERROR] [rcl]` line). In-process: no node starts."""
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")

from spec_vla_ros.ros.policy_node import NODE_NAME  # noqa: E402
from spec_vla_ros.ros.node_arguments import check_node_arguments, parameters_files  # noqa: E402

EXPECTED_ARGUMENTS = "expected ROS 2 node arguments after --ros-args: -p name:=value, -r from:=to, --params-file FILE"


def args(*ros_args: str) -> list[str]:
    return ["policy_node", "--ros-args", "-r", f"__node:={NODE_NAME}", *ros_args]


@pytest.fixture
def params(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "params.yaml"
        path.write_text(text)
        return str(path)
    return write


def refused(argv: list[str], capfd) -> str:
    with pytest.raises(ValueError) as caught:
        check_node_arguments(argv, NODE_NAME)
    message = str(caught.value)
    assert "\n" not in message and " at /" not in message, message      # one line, no C source locations
    assert capfd.readouterr() == ("", ""), "nothing is printed beside the one line"
    return message


def test_a_valid_command_line_passes_quietly(params, capfd):
    good = params(f"{NODE_NAME}:\n  ros__parameters:\n    draft: history\n")
    check_node_arguments(args("--params-file", good, "-p", "draft:=llama", "--log-level", "warn"), NODE_NAME)
    check_node_arguments(["policy_node"], NODE_NAME)
    assert capfd.readouterr() == ("", "")


def test_a_malformed_parameters_file_names_the_place_and_the_layout(params, capfd):
    path = params(f"{NODE_NAME}:\n  ros__parameters:\n    draft: [mamba\n")
    assert refused(args("--params-file", path), capfd) == (
        f"parameters file {path} is not valid YAML (while parsing a flow sequence at line 3, column 12: expected "
        f"',' or ']', but got '<stream end>' at line 4, column 1); expected a YAML mapping "
        f"'{NODE_NAME}: {{ros__parameters: {{name: value, ...}}}}'")
    path = params(f"{NODE_NAME}:\n  ros__parameters: [draft]\n")
    assert refused(args("--params-file", path), capfd).endswith(f"does not hold a YAML mapping '{NODE_NAME}: "
                                                                 "{ros__parameters: {name: value, ...}}'")
    missing = refused(args("--params-file", "/no/such/params.yaml"), capfd)
    assert missing.startswith("parameters file /no/such/params.yaml cannot be read (No such file or directory)")


def test_unknown_flags_and_bad_rules_say_what_is_expected(capfd):
    assert refused(args("--bogus-flag"), capfd) == f"unknown ROS argument(s) ['--bogus-flag']; {EXPECTED_ARGUMENTS}, " \
                                                   "--log-level LEVEL"
    outside = refused(["policy_node", "--bogus-flag", *args()[1:]], capfd)
    assert outside.startswith("unexpected argument(s) ['--bogus-flag'] outside --ros-args; expected only ROS 2")
    override = refused(args("-p", "draft"), capfd)
    assert override.startswith("Couldn't parse parameter override rule: '-p draft'") and EXPECTED_ARGUMENTS in override
    trailing = refused(args("--params-file"), capfd)
    assert "--params-file" in trailing and EXPECTED_ARGUMENTS in trailing


def test_parameters_files_are_read_from_ros_args_sections_only():
    assert parameters_files(["p", "--params-file", "a", "--ros-args", "--params-file", "b", "--", "--params-file",
                             "c", "--ros-args", "-p", "x:=1", "--params-file", "d"]) == ["b", "d"]
