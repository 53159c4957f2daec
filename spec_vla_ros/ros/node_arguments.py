"""A node's command line and parameters file, checked before rclpy.init reads them.

rcl refuses a bad command line in its own words: a C source location per cause, an extra
`[ERROR] [rcl]: Failed to parse global arguments` line before the node can say anything, and for
an unknown flag only the flag (`['--bogus-flag']`). Arguments outside `--ros-args` it passes to
the program, which for these nodes means they are ignored. `check_node_arguments` finds the same
problems first and raises a ValueError whose one line names what was wrong and what is expected;
the launcher (`spec-vla-launch`) reads parameters files with the same `read_parameters_file`.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROS_ARGUMENTS = ("ROS 2 node arguments after --ros-args: -p name:=value, -r from:=to, --params-file FILE, "
                 "--log-level LEVEL")
RCL_LOCATION = re.compile(r",? at \S+\.c:\d+")          # ", at /project/src/rcl/arguments.c:415"
RCL_PREFIXES = ("Failed to parse ROS arguments: ", "failed to initialize rcl: ")


def parameters_file_layout(node_name: str) -> str:
    return f"a YAML mapping '{node_name}: {{ros__parameters: {{name: value, ...}}}}'"


def read_parameters_file(path: str, node_name: str) -> dict:
    """The node's parameters in a ROS 2 parameters file (its `ros__parameters`, {} if the file has
    no section for it). ValueError (one line: the file, the place, the layout expected) for a file
    that cannot be read, is not YAML, or does not have that layout."""
    layout = parameters_file_layout(node_name)
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"parameters file {path} cannot be read ({error.strerror or error}); expected {layout}") \
            from None
    except yaml.YAMLError as error:
        raise ValueError(f"parameters file {path} is not valid YAML ({yaml_problem(error)}); expected {layout}") \
            from None
    document = {} if document is None else document
    section = document.get(node_name, {}) if isinstance(document, dict) else None
    parameters = section.get("ros__parameters", {}) if isinstance(section, dict) else None
    if not isinstance(parameters, dict):
        raise ValueError(f"parameters file {path} does not hold {layout}")
    return parameters


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what, and where (1-based lines and columns)."""
    def at(mark) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None)
    if problem is None:
        return " ".join(str(error).split())
    context = getattr(error, "context", None)
    text = f"{context}{at(error.context_mark)}: " if context else ""
    return " ".join(f"{text}{problem}{at(error.problem_mark)}".split())


def parameters_files(args: list[str]) -> list[str]:
    """The files named by `--params-file` inside the `--ros-args` sections of `args`."""
    files, inside = [], False
    for index, arg in enumerate(args):
        if arg == "--ros-args":
            inside = True
        elif arg == "--":
            inside = False
        elif inside and arg == "--params-file" and index + 1 < len(args):
            files.append(args[index + 1])
    return files


def ros_arguments_error(error: Exception) -> str:
    """rclpy's error for a command line it cannot parse, as one line saying what is expected."""
    if type(error).__name__ == "UnknownROSArgsError":
        return f"unknown ROS argument(s) {error}; expected {ROS_ARGUMENTS}"
    text = RCL_LOCATION.sub("", " ".join(str(error).split()))
    for prefix in RCL_PREFIXES:
        text = text.removeprefix(prefix)
    return f"{text.rstrip('.')}; expected {ROS_ARGUMENTS}"


def check_node_arguments(args: list[str], node_name: str) -> None:
    """`args` as sys.argv (the program first). ValueError, one line, for a parameters file that is
    not the node's YAML, a ROS argument rcl would refuse, or any argument outside --ros-args (the
    nodes take none of their own)."""
    for path in parameters_files(args):
        read_parameters_file(path, node_name)
    from rclpy.utilities import remove_ros_args

    try:
        own = remove_ros_args(args)[1:]                # parses as rcl does, and logs nothing
    except Exception as error:  # noqa: BLE001 -- UnknownROSArgsError, RCLInvalidROSArgsError
        raise ValueError(ros_arguments_error(error)) from None
    if own:
        raise ValueError(f"unexpected argument(s) {own} outside --ros-args; expected only {ROS_ARGUMENTS}")
