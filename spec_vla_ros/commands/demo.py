"""`spec-vla-demo`: one closed-loop LIBERO-GOAL episode over ROS 2, then what the bag recorded.

The `libero_goal` launch configuration runs as separate processes talking over DDS (the same
Launcher as `spec-vla-launch`): the LIBERO-GOAL bridge, the policy node (embedded miniature
verifier, packaged Mamba draft, strict acceptance) and the bag recorder. This process shows
progress from `decode_stats` while the episode runs, then reads the bag back and prints the
episode result and the decode statistics. Everything lands in one output directory: the bag,
each node's log, and the bridge's results files.

`--verifier DIR` (and `--draft-checkpoint DIR`) are resolved against the directory the demo is
started in. A verifier other than the miniature without `--draft-checkpoint` runs the `history`
draft (it needs no checkpoint) and says how to train a Mamba draft; a setting the policy node
would refuse ends the demo with exit code 2 and one line before any node starts.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from sim_bridge.constants import LIBERO_GOAL_MAX_STEPS, LIBERO_GOAL_NUM_TASKS

from ..ros import topics
from ..ros.decode_report import DecodeReport
from ..ros.launch_config import node_environment, resolve
from ..ros.launcher import Launcher
from ..vla.constants import ACTION_DIM, MINIATURE, MINIATURE_NAME
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP, check_threads
from .arguments import ArgumentParser, fail

DEMO_MAX_STEPS = 60        # ~1-2 minutes on 2 CPU cores, startup included
NO_DRAFT_NOTE = ("no draft checkpoint for verifier '{verifier}' (the packaged drafts are trained for the miniature): "
                 "using the 'history' draft, which needs none; train a Mamba draft for this verifier with "
                 "spec-vla-collect and spec-vla-train-draft, then pass --draft-checkpoint DIR")
MINIATURE_NOTE = ("The default verifier is a miniature OpenVLA built from a fixed seed: it exercises every code "
                  "path (checkpoint layout, prompt, action tokens, speculative decoding) and solves no task, so "
                  "the episode fails by design. Run with --verifier pointing at a real OpenVLA checkpoint "
                  "(openvla-7b-finetuned-libero-goal, HF format) and a draft trained for it for real results.")


class Progress:
    """A client node in this process: counts actions from decode_stats and prints one status line."""

    def __init__(self, max_steps: int):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.rclpy, self.max_steps = rclpy, max_steps
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("spec_vla_demo_progress")
        self.node.create_subscription(DiagnosticArray, topics.DECODE_STATS.name, self._on_stats,
                                      topics.DECODE_STATS.qos_profile())
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.started = time.monotonic()
        self.actions, self.passes, self.total_ms = 0, 0, 0.0
        self.interactive = sys.stdout.isatty()
        self._last_line = 0.0
        self._starting_shown = False

    def _on_stats(self, msg) -> None:
        report = DecodeReport.from_pairs((kv.key, kv.value) for kv in msg.status[0].values)
        self.actions += 1
        self.passes += report.stats.verifier_passes
        self.total_ms += report.stats.total_ms

    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=max(0.0, deadline - time.monotonic()))
        self._show()

    def _show(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.actions == 0:
            if self._starting_shown:           # said once; the elapsed seconds count on in a terminal only
                if not self.interactive:
                    return
            self._starting_shown = True
            line = f"[{elapsed:5.0f} s] starting: loading the policy, building the LIBERO scene (~30-60 s on 2 cores)"
        else:
            line = (f"[{elapsed:5.0f} s] step {min(self.actions, self.max_steps)}/{self.max_steps}: "
                    f"{ACTION_DIM * self.actions / self.passes:.2f} tokens per verifier pass, "
                    f"{self.total_ms / self.actions:.0f} ms per action")
        if self.interactive:
            print(f"\r{line:<100}", end="", flush=True)
        elif time.monotonic() - self._last_line >= 10.0:
            print(line, flush=True)
            self._last_line = time.monotonic()

    def close(self) -> None:
        if self.interactive:
            print()
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def print_report(bag: Path) -> None:
    from ..analysis.bags import read_bag, summarize_decoding

    run = read_bag(bag)
    print(f"\nRead back from the bag {bag}:")
    print("  messages: " + ", ".join(f"{topic} {count}" for topic, count in run.message_counts.items()))
    for episode in run.episodes:
        outcome = ("interrupted (stopped before it ended)" if episode.get("interrupted") else
                   "success" if episode["success"] else f"failure ({episode['failure_reason']})")
        print(f"  episode: task {episode['task_id']} \"{episode['instruction']}\": {outcome}, "
              f"{episode['steps']} steps, {episode['wall_seconds']:.1f} s")
    if not run.episodes:
        print("  episode: no result recorded (the run was stopped before the episode ended)")
    if not run.decode_stats:
        print("\nDecode statistics: no action was decoded (see the reason above and the policy node's log)")
        return
    print(f"\nDecode statistics ({len(run.decode_stats)} actions):")
    header = f"  {'draft':<8} {'acceptance':<11} {'actions':>7} {'passes/action':>13} {'tokens/pass':>11} " \
             f"{'median ms':>9} {'p90 ms':>7}"
    print(header)
    for row in summarize_decoding(run.decode_stats):
        print(f"  {row['draft']:<8} {row['acceptance']:<11} {row['actions']:>7} {row['passes_per_action']:>13.2f} "
              f"{row['acceptance_length']:>11.2f} {row['median_ms']:>9.1f} {row['p90_ms']:>7.1f}")
    print(f"  (autoregressive decoding: {ACTION_DIM} verifier passes per action, 1 token per pass)")
    print(f"  camera frames dropped by the policy node: {run.decode_stats[-1].frames_dropped}")


def absolute(path: str) -> str:
    """A path the user typed, resolved against this process's directory (the nodes run in the
    output directory, where a relative path would mean something else)."""
    return str(Path(path).expanduser().absolute())


def policy_arguments(args) -> tuple[dict, str | None]:
    """The policy's launch arguments from the command line, checked as the policy node would check
    them, and a note to print, if any. Without --draft, the packaged Mamba draft serves the
    miniature (embedded or written) and a --draft-checkpoint; any other verifier gets `history`
    with NO_DRAFT_NOTE. Raises ValueError (one line) for a setting the policy node would refuse."""
    from ..drafts.registry import verifier_identity
    from ..policy import PolicyConfig, validate_config

    verifier = args.verifier if args.verifier == MINIATURE else absolute(args.verifier)
    draft_checkpoint = absolute(args.draft_checkpoint) if args.draft_checkpoint else ""
    draft, note = args.draft, None
    if draft is None:
        verifier_name = verifier_identity(verifier)[0]
        draft = "mamba" if draft_checkpoint or verifier_name == MINIATURE_NAME else "history"
        if draft == "history":
            note = NO_DRAFT_NOTE.format(verifier=verifier_name)
    validate_config(PolicyConfig(verifier=verifier, draft=draft, draft_checkpoint=draft_checkpoint,
                                 acceptance=args.acceptance))
    check_threads(args.threads)
    return {"verifier": verifier, "draft": draft, "draft_checkpoint": draft_checkpoint,
            "acceptance": args.acceptance, "threads": str(args.threads)}, note


def check_episode_arguments(args) -> None:
    """What the bridge would refuse, checked here (ValueError, one line) so no node starts for it."""
    if not 0 <= args.task_id < LIBERO_GOAL_NUM_TASKS:
        raise ValueError(f"--task-id {args.task_id}: LIBERO-GOAL task ids are 0-{LIBERO_GOAL_NUM_TASKS - 1}")
    if args.max_steps < 1:
        raise ValueError(f"--max-steps {args.max_steps}: an episode needs at least 1 step")
    if args.output is not None and args.output.exists():
        raise ValueError(f"--output {args.output} exists; choose a new directory (the demo never overwrites a run)")


def fatal_lines(log_path: Path, limit: int = 3) -> list[str]:
    """The lines of a failed node's log that say why (FATAL / ERROR / Traceback's last line)."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    reasons = [line for line in lines if "[FATAL]" in line or "[ERROR]" in line]
    return (reasons or lines[-1:])[-limit:]


def main(argv=None) -> int:
    parser = ArgumentParser(prog="spec-vla-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-id", type=int, default=0, help=f"LIBERO-GOAL task (0-{LIBERO_GOAL_NUM_TASKS - 1})")
    parser.add_argument("--max-steps", type=int, default=DEMO_MAX_STEPS,
                        help=f"policy steps in the episode (LIBERO-GOAL evaluations use {LIBERO_GOAL_MAX_STEPS})")
    parser.add_argument("--draft", help="ar | mamba | llama | history (default: mamba, or history for a "
                                        "verifier without a draft checkpoint)")
    parser.add_argument("--draft-checkpoint", default="",
                        help="draft trained for --verifier (a draft directory, or one with mamba/ and llama/); "
                             "'' = the packaged drafts (miniature)")
    parser.add_argument("--acceptance", default="strict", help="strict | relaxed | relaxed-guarded")
    parser.add_argument("--verifier", default=MINIATURE, help="'miniature' or an OpenVLA HF directory")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP + " (policy node)")
    parser.add_argument("--output", type=Path,
                        help="output directory, must not exist (default: spec_vla_demo/<date>_<time>)")
    args = parser.parse_args(argv)

    from sim_bridge.libero_goal import check_headless_rendering
    try:                                              # before anything starts: exit 2 with one line
        check_episode_arguments(args)
        check_headless_rendering()                    # RuntimeError; before the policy's checks load the model stack
        policy, note = policy_arguments(args)
    except (RuntimeError, ValueError) as error:
        return fail("spec-vla-demo", error)
    if note:
        print(f"spec-vla-demo: {note}")
    output = (args.output or Path("spec_vla_demo") / f"{datetime.now():%Y%m%d_%H%M%S}").resolve()
    bag = output / "bag"
    try:
        output.mkdir(parents=True, exist_ok=False)
        nodes = resolve("libero_goal", {
            **policy, "record": "true", "bag": str(bag), "task_ids": f"[{args.task_id}]",
            "episodes_per_task": "1", "max_steps": str(args.max_steps)})
    except (OSError, ValueError) as error:
        return fail("spec-vla-demo", error)
    # Keep the demo's DDS traffic on this machine unless the user chose otherwise (a robot across
    # hosts must not: README, "DDS and large frames"); the progress client here uses the same
    # transports as the nodes.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.update(node_environment())
    print(f"spec-vla-demo: one LIBERO-GOAL episode (task {args.task_id}, {args.max_steps} steps), verifier "
          f"'{policy['verifier']}', draft '{policy['draft']}', {args.acceptance} acceptance.\n"
          f"Nodes: {', '.join(node.name for node in nodes)}, as separate processes over DDS. Output: {output}")
    if args.verifier == MINIATURE:
        print(f"Note: {MINIATURE_NOTE}")

    launcher = Launcher(nodes, log_dir=output / "logs", cwd=output)
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: launcher.stop_requested.set())
    progress = Progress(args.max_steps)
    launcher.start()
    try:
        code = None
        while code is None:
            progress.spin(0.5)
            code = launcher.poll()
    finally:
        progress.close()
        codes = launcher.stop()
    if code != 0:
        failed = [name for name, node_code in codes.items() if node_code not in (0, None)]
        print(f"spec-vla-demo: the run failed ({', '.join(failed) or 'exit code ' + str(code)}); "
              f"see the logs in {output / 'logs'}", file=sys.stderr)
        for name in failed:                           # the reason, here and not only in the log
            for line in fatal_lines(output / "logs" / f"{name}.log"):
                print(f"  {name}: {line}", file=sys.stderr)
    if (bag / "metadata.yaml").exists():
        print_report(bag)
    print(f"\nLogs: {output / 'logs'}; results files: {output / 'libero_goal_results'}")
    if args.verifier == MINIATURE:
        print(f"\n{MINIATURE_NOTE}")
    return code


if __name__ == "__main__":
    sys.exit(main())
