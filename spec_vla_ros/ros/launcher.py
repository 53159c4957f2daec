"""The runner behind `spec-vla-launch` (commands/launch.py): the launch files' node graphs without
ROS 2's `launch` (not on PyPI), read from the same spec_vla_ros.ros.launch_config.

Each node is a separate process (its console script with `--ros-args --params-file ... -r from:=to
-p name:=value`), talking over real DDS. The run ends when the node marked `ends_run` exits (the
LIBERO bridge after its episodes) or a node fails; Ctrl-C / SIGTERM end it too. Stopping goes in
reverse start order, so the recorder, started first, is the last to close: each node gets SIGINT,
then SIGTERM and SIGKILL if it does not exit in time. The nodes get this process's environment
plus launch_config.node_environment() (DDS settings for large camera frames), as with ros2 launch.
"""
from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .dds import describe as describe_dds
from .launch_config import ResolvedNode, node_environment
from .node_arguments import read_parameters_file

SIGINT_TIMEOUT_S = 15.0       # the bridge may be in a ~10 s environment reset
SIGTERM_TIMEOUT_S = 5.0
POLL_PERIOD_S = 0.2


def executable_path(executable: str) -> str:
    """The console script next to this Python (a venv's bin/) or next to the running command
    (colcon installs them in lib/spec_vla_ros/), else on PATH."""
    for directory in (Path(sys.executable).parent, Path(sys.argv[0]).resolve().parent):
        if (directory / executable).is_file():
            return str(directory / executable)
    found = shutil.which(executable)
    if found is None:
        raise FileNotFoundError(f"executable '{executable}' not found; install the package (pip install -e .)")
    return found


def node_command(node: ResolvedNode) -> list[str]:
    command = [executable_path(node.executable), "--ros-args", "-r", f"__node:={node.name}",
               "--params-file", node.params_file]
    for source, target in node.remappings:
        command += ["-r", f"{source}:={target}"]
    for name, value in node.parameters.items():
        command += ["-p", f"{name}:={json.dumps(value)}"]     # JSON is YAML, which rcl parses
    if node.enclave:
        command += ["--enclave", node.enclave]                # ROS 2 security (launch argument keystore)
    return command


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher dies without stopping them (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class Launcher:
    """Starts resolved nodes, waits for the end of the run, stops them in order.

    `log_dir` None: children write to this terminal; else each to `<log_dir>/<node>.log`.
    """

    def __init__(self, nodes: list[ResolvedNode], log_dir: Path | None = None, cwd=None):
        self.nodes, self.log_dir, self.cwd = nodes, log_dir, cwd
        self.processes: dict[str, subprocess.Popen] = {}
        self.stop_requested = threading.Event()

    @staticmethod
    def environment() -> dict[str, str]:
        """The nodes' environment: ours, the package's DDS settings where we set none, unbuffered output."""
        return dict(os.environ, **node_environment(), PYTHONUNBUFFERED="1")

    def start(self) -> None:
        if self.log_dir is not None:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        environment = self.environment()
        log(describe_dds())
        for node in self.nodes:
            output = None if self.log_dir is None else open(Path(self.log_dir) / f"{node.name}.log", "w")
            command = node_command(node)
            log(f"starting {node.name}: {shlex.join(command)}")
            # A session of its own: Ctrl-C reaches the launcher only, which stops the nodes in order.
            self.processes[node.name] = subprocess.Popen(
                command, cwd=self.cwd, env={**environment, **node.environment}, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True,
                preexec_fn=_die_with_parent)
            if output is not None:
                output.close()

    def poll(self) -> int | None:
        """None while the run goes on, else its exit code: that of the node that ended it, 0 on request."""
        if self.stop_requested.is_set():
            log("stop requested")
            return 0
        for node in self.nodes:
            code = self.processes[node.name].poll()
            if code is None:
                continue
            if node.ends_run and code == 0:
                log(f"{node.name} finished")
                return 0
            if code != 0 or node.ends_run:
                log(f"{node.name} exited with code {code}; stopping the run")
                return code or 1
        return None

    def wait(self) -> int:
        while (code := self.poll()) is None:
            self.stop_requested.wait(POLL_PERIOD_S)
        return code

    def stop(self) -> dict[str, int]:
        """Stop every node still running, in reverse start order; returns the exit codes."""
        for node in reversed(self.nodes):
            process = self.processes.get(node.name)
            if process is None or process.poll() is not None:
                continue
            for sent, timeout_s in ((signal.SIGINT, SIGINT_TIMEOUT_S), (signal.SIGTERM, SIGTERM_TIMEOUT_S),
                                    (signal.SIGKILL, None)):
                process.send_signal(sent)
                try:
                    process.wait(timeout_s)
                    break
                except subprocess.TimeoutExpired:
                    log(f"{node.name} did not exit within {timeout_s:.0f} s of {sent.name}")
        return {name: process.returncode for name, process in self.processes.items()}

    def run(self) -> int:
        self.start()
        try:
            return self.wait()
        finally:
            codes = self.stop()
            log("exit codes: " + ", ".join(f"{name} {code}" for name, code in codes.items()))


def log(message: str) -> None:
    print(f"[spec-vla-launch] {message}", file=sys.stderr, flush=True)


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise ValueError(f"expected name:=value, got '{item}'")
        values[name] = value
    return values


def node_settings(node: ResolvedNode) -> dict:
    """The parameters a node will start with: its section of the parameters file, then the
    launch arguments' values on top (what rcl does with --params-file and -p). ValueError (one
    line, naming the file, the place and the layout expected) for a file rcl would refuse."""
    return {**read_parameters_file(node.params_file, node.name), **node.parameters}


def check_nodes(nodes: list[ResolvedNode]) -> None:
    """What the nodes would refuse at start, checked before any starts (ValueError, one line):
    the policy's settings (checkpoints included) and the bridge's episode selection. A parameter
    that neither the parameters file nor a launch argument sets has its node's default."""
    from dataclasses import fields

    from sim_bridge.bridge_parameters import BRIDGE_PARAMETERS
    from sim_bridge.constants import LIBERO_EPISODES_PER_TASK, LIBERO_GOAL_NUM_TASKS

    from .node_parameters import defaults
    from ..policy import PolicyConfig, validate_config
    from .policy_parameters import POLICY_PARAMETERS
    from ..vla.threads import check_threads

    for node in nodes:
        if node.executable == "policy_node":
            values = {**defaults(POLICY_PARAMETERS), **node_settings(node)}
            names = {field.name for field in fields(PolicyConfig)}
            validate_config(PolicyConfig(**{key: value for key, value in values.items() if key in names}))
            check_threads(values["threads"])
        elif node.executable == "libero_bridge_node":
            values = {**defaults(BRIDGE_PARAMETERS), **node_settings(node)}
            task_ids = values["task_ids"]
            if not isinstance(task_ids, list) or not task_ids or any(
                    isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < LIBERO_GOAL_NUM_TASKS
                    for t in task_ids):
                raise ValueError(f"task_ids:={task_ids!r}: expected a non-empty list of LIBERO-GOAL task ids "
                                 f"0-{LIBERO_GOAL_NUM_TASKS - 1}, e.g. task_ids:=[0,3]")
            episodes = values["episodes_per_task"]
            if isinstance(episodes, bool) or not isinstance(episodes, int) or not (
                    1 <= episodes <= LIBERO_EPISODES_PER_TASK):
                raise ValueError(f"episodes_per_task:={episodes!r}: expected 1-{LIBERO_EPISODES_PER_TASK}")
            steps = values["max_steps"]
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"max_steps:={steps!r}: expected a positive integer")
