"""The node processes' lifecycle helpers: the rate-limited log with rclpy's real logger, the spin
step that no exception ends, a half-built node destroyed in order, and the bounded teardown."""
import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")

import rclpy.logging  # noqa: E402
import rclpy.node  # noqa: E402
from rclpy._rclpy_pybind11 import RCLError  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from spec_vla_ros.ros.lifecycle import GuardedSpin, RateLimitedLog, destroyed_on_error  # noqa: E402


def test_one_log_reports_several_severities_with_rclpys_logger():
    """rclpy refuses a call site whose severity changes; an error then a warning through the same
    RateLimitedLog raised 'Logger severity cannot be changed between calls' inside a callback."""
    report = RateLimitedLog(rclpy.logging.get_logger("lifecycle_test"))
    for level in ("error", "warning", "info", "error", "warning"):
        report(level, f"a {level} message")


class RaisingExecutor:
    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def spin_once(self, timeout_sec):
        self.calls += 1
        if self.calls <= self.failures:
            raise TypeError("'99' is not a valid Parameter.Type")


class Recorder:
    def __init__(self):
        self.lines = []

    def error(self, text):
        self.lines.append(text)

    warning = info = error


def test_guarded_spin_counts_and_logs_what_the_executor_raises_and_goes_on():
    logger, counted = Recorder(), []
    spin = GuardedSpin(RaisingExecutor(failures=3), logger, on_error=lambda: counted.append(1))
    for _ in range(5):
        spin.spin_once(timeout_sec=0.0)
    assert spin.errors == 3 and len(counted) == 3 and spin.executor.calls == 5
    assert len(logger.lines) == 1 and "TypeError" in logger.lines[0] and "(1 so far)" in logger.lines[0]


class HalfBuiltNode(rclpy.node.Node):
    """A node whose constructor fails after rclpy made it, as an invalid configuration does."""

    def __init__(self, context, fail: bool, made: list):
        super().__init__("half_built", context=context)
        made.append(self)
        with destroyed_on_error(self):
            self.declare_parameter("draft", "mamba")
            self.create_publisher(String, "chatter", 1)
            if fail:
                raise ValueError("draft 'eagle': expected one of ...")


def test_a_node_whose_constructor_fails_is_destroyed_before_the_error_goes_on():
    """The half-built node's rcl handles are gone when the error reaches the caller (not left to
    the garbage collector); a constructor that succeeds leaves its node alive."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=0)
    made = []
    try:
        with pytest.raises(ValueError, match="draft 'eagle'"):
            HalfBuiltNode(context, fail=True, made=made)
        assert list(made[0].publishers) == []
        with pytest.raises(RCLError, match="node pointer is invalid"):
            made[0].handle.get_fully_qualified_name()
        alive = HalfBuiltNode(context, fail=False, made=made)
        assert len(list(alive.publishers)) == 2 and alive.handle.get_fully_qualified_name() == "/half_built"
        alive.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_bounded_teardown_ends_a_blocked_process():
    """A teardown that blocks for good (here: a sleep standing in for Fast DDS's TCP disconnect)
    ends after the limit with the stacks on stderr and exit 1; a quick one exits normally."""
    code = ("import time\nfrom spec_vla_ros.ros.lifecycle import bounded_teardown\n"
            "with bounded_teardown({limit}):\n    time.sleep({sleep})\nprint('done')\n")
    blocked = subprocess.run([sys.executable, "-c", code.format(limit=1.0, sleep=60)], capture_output=True,
                             text=True, timeout=30)
    assert blocked.returncode == 1 and "Timeout" in blocked.stderr and "done" not in blocked.stdout
    quick = subprocess.run([sys.executable, "-c", code.format(limit=5.0, sleep=0)], capture_output=True, text=True,
                           timeout=30)
    assert quick.returncode == 0 and quick.stdout.strip() == "done"


def test_a_blocked_participant_teardown_ends_the_process_with_its_own_exit_code():
    """end_node: a context whose destroy never returns (standing in for Fast DDS's TCP teardown)
    ends the process after TEARDOWN_LIMIT_S with one line and the node's exit code."""
    code = ("import threading, rclpy.utilities\n"
            "class Stuck:\n    def destroy(self):\n        threading.Event().wait()\n"
            "rclpy.utilities.get_default_context = lambda: Stuck()\n"
            "from spec_vla_ros.ros import lifecycle\n"
            "class Node:\n    exit_code = 3\n    def destroy_node(self):\n        pass\n"
            "lifecycle.end_node(Node())\nprint('not reached')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3 and "not reached" not in result.stdout, result.stderr
    assert result.stderr.count("\n") == 1 and "teardown did not finish" in result.stderr


def test_exit_process_flushes_what_was_buffered_and_runs_no_finalizer():
    """A node's process ends with exit_process: the exit code is main's, buffered output and log
    records reach the pipe, and no atexit handler or finalizer runs (where rclpy objects left after
    the context's teardown crashed a recorder, exit -11)."""
    code = ("import atexit, logging, sys\n"
            "from spec_vla_ros.ros import lifecycle\n"
            "atexit.register(lambda: print('finalized', flush=True))\n"
            "logging.basicConfig(stream=sys.stderr)\n"
            "logging.getLogger('node').warning('last record')\n"
            "sys.stdout.write('buffered, no newline')\n"
            "lifecycle.exit_process(3)\n"
            "print('not reached')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered, no newline" and "last record" in result.stderr
