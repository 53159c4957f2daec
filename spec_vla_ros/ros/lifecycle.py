"""How every node process of the package runs: stop signals, a spin loop that no exception ends,
and a shutdown that never hangs.

- Stop: SIGINT / SIGTERM (and SIGHUP for the recorder) set an event the main loop watches; a
  second signal while stopping ends the process at once (exit 130), as a user pressing Ctrl-C
  twice expects.
- Spin: `GuardedSpin.spin_once` runs one executor step. rclpy can raise from inside the executor
  for what a peer sent (a SetParameters request whose ParameterValue has type 99 raised there and
  aborted the policy node): such an exception is caught, counted and logged (the first at once,
  then rate-limited with the count), and the node keeps serving.
- Start: a constructor that refuses its configuration destroys its half-built node itself
  (`destroyed_on_error`) before the error reaches main, which logs one line and exits 2.
- Shutdown: destroying a DDS participant (rclpy's context, not the node) that ran Fast DDS's TCP
  transport (LARGE_DATA) after a TCP peer vanished can block for good (gdb:
  TCPChannelResourceBasic::disconnect() waits on a mutex held by a dds.tcp.* thread blocked in
  read() with no timeout). `end_node` runs that teardown in a thread and exits without it after
  TEARDOWN_LIMIT_S, with one line; `bounded_teardown` arms faulthandler's watchdog, a C thread that
  needs no GIL, behind it: stacks on stderr and exit 1. Nothing is lost by then: bags are closed
  and actions published before the teardown starts.
- Exit: a node's process (`run_node`) ends with `exit_process`, without the interpreter's
  finalizers: after the context is gone, what rclpy objects are left (the executor, its guard
  conditions) would be freed in whatever order the collector picks. In CI a recorder stopped after
  its camera peers were SIGKILLed ended with a segmentation fault (exit -11) when only the
  teardown and the interpreter's exit were left, its bag closed. faulthandler is on in every node
  process, so a crash that remains prints every thread's Python stack.
"""
from __future__ import annotations

import faulthandler
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import NoReturn

from ..errors import one_line

TEARDOWN_LIMIT_S = 5.0              # the DDS participant's teardown; then the process exits without it
BACKSTOP_S = 3.0                    # faulthandler's watchdog after that, if the blocked call holds the GIL
EXIT_SECOND_SIGNAL = 130
WARNING_PERIOD_S = 5.0


def stop_event(signals=(signal.SIGINT, signal.SIGTERM)) -> threading.Event:
    """An event set by the first of `signals`; a second one ends the process at once."""
    stop = threading.Event()

    def handle(signal_number, _frame):
        if stop.is_set():
            os.write(2, f"[spec_vla_ros] second {signal.Signals(signal_number).name}: exiting now\n".encode())
            os._exit(EXIT_SECOND_SIGNAL)
        stop.set()

    for signal_number in signals:
        signal.signal(signal_number, handle)
    return stop


class RateLimitedLog:
    """Each kind of problem is logged at once, then at most once per period; the kind is the
    message with its numbers blanked, so a camera sending the same bad frame 30 times a second
    logs once per period, while a different problem is reported at once.

    (rclpy's `throttle_duration_sec` throttles per call site: a second, different problem from
    the same callback would stay hidden for the period.)"""

    def __init__(self, logger, period_s: float = WARNING_PERIOD_S):
        self.logger, self.period_s = logger, period_s
        self._last: dict[tuple, float] = {}
        self._suppressed: dict[tuple, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: str, message: str) -> None:
        key = (level, re.sub(r"\d+", "#", message))
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.period_s) < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        text = message + (f" ({suppressed} more like it in the last {self.period_s:.0f} s)" if suppressed else "")
        # One call site per severity: rclpy's logger refuses a call site whose severity changes
        # ("Logger severity cannot be changed between calls").
        if level == "error":
            self.logger.error(text)
        elif level == "warning":
            self.logger.warning(text)
        else:
            self.logger.info(text)


class GuardedSpin:
    """An executor step that no exception ends: counted in `errors` and logged (rate-limited, with
    the running count); `on_error` (optional) is told too, e.g. to count it in the node's reports."""

    def __init__(self, executor, logger, on_error=None):
        self.executor, self.errors, self.on_error = executor, 0, on_error
        self.report = RateLimitedLog(logger)

    def spin_once(self, timeout_sec: float) -> None:
        try:
            self.executor.spin_once(timeout_sec=timeout_sec)
        except Exception as error:  # noqa: BLE001 -- nothing a peer sends may end the node
            self.errors += 1
            if self.on_error is not None:
                self.on_error()
            self.report("error", f"ignored an exception while handling a message or request "
                                 f"({self.errors} so far): {type(error).__name__}: {one_line(error)}")


@contextmanager
def destroyed_on_error(node):
    """For a node's constructor after `super().__init__`: if the rest fails (an invalid
    configuration), the half-built node is destroyed here, in order, before the error goes on.

    Left to the garbage collector, its rcl handles (parameter services, publishers) are freed when
    the exception is and in whatever order the collector picks, while DDS threads deliver discovery
    data: in CI, a policy node whose configuration was refused ended with a segmentation fault
    (exit -11) right after its one line, instead of exit 2."""
    try:
        yield
    except BaseException:
        node.destroy_node()
        raise


@contextmanager
def bounded_teardown(limit_s: float = TEARDOWN_LIMIT_S):
    """Within the block (destroying nodes, shutting rclpy down) the process ends after `limit_s`
    whatever the middleware does; the stacks go to stderr first."""
    try:
        faulthandler.dump_traceback_later(limit_s, exit=True, file=sys.stderr)
    except (ValueError, RuntimeError, OSError, AttributeError):     # no usable stderr: no watchdog
        yield
        return
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def exit_process(code: int) -> NoReturn:
    """End the process now with `code`, after flushing what Python buffered (stdout, stderr,
    logging); no finalizers run (module docstring, 'Exit')."""
    import logging
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):       # closed or replaced stream
            pass
    os._exit(code)


def run_node(main) -> NoReturn:
    """A node's console script: faulthandler on (a crash prints the stacks), `main()`, then
    `exit_process` with its code."""
    faulthandler.enable()
    exit_process(main())


def end_node(node) -> None:
    """Destroy `node` (None: not created), shut rclpy down and destroy its context, in bounded time.

    The context holds the DDS participant: left to the interpreter's exit, its teardown (where Fast
    DDS's TCP transport can block for good) would run unwatched. It runs in a thread of its own;
    if it has not finished after TEARDOWN_LIMIT_S, one line says so and the process exits with the
    code it was going to end with (the node's work is done by then: bags closed, actions sent).
    faulthandler's watchdog stays behind it in case the blocked call holds the GIL."""
    import rclpy
    from rclpy.utilities import get_default_context

    failing = sys.exc_info()[0] is not None
    exit_code = 1 if failing else getattr(node, "exit_code", 0)
    with bounded_teardown(TEARDOWN_LIMIT_S + BACKSTOP_S):
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        teardown = threading.Thread(target=get_default_context().destroy, name="dds_teardown", daemon=True)
        teardown.start()
        teardown.join(TEARDOWN_LIMIT_S)
        if teardown.is_alive():
            os.write(2, f"[spec_vla_ros] the DDS participant's teardown did not finish in {TEARDOWN_LIMIT_S:g} s "
                        f"(Fast DDS TCP transport); exiting without it\n".encode())
            os._exit(exit_code)
