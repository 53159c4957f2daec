"""`spec-vla-bench sim`'s command line: options, and the renderer checked before the simulator
starts (a problem is one line on stderr and exit status 2); the measurement is benchmarks/sim.py."""
from __future__ import annotations

import argparse

from sim_bridge.constants import LIBERO_GOAL_MAX_STEPS, LIBERO_RENDER_SIZE

from ..arguments import fail

PROG = "spec-vla-bench sim"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-id", type=int, default=0, help="LIBERO-GOAL task (0-9)")
    parser.add_argument("--max-steps", type=int, default=LIBERO_GOAL_MAX_STEPS,
                        help="steps per benchmark episode (LIBERO-GOAL: 300); shorten for a quick run")
    parser.add_argument("--image-size", type=int, default=LIBERO_RENDER_SIZE, help="rendered image size")
    parser.add_argument("--step-samples", type=int, default=20, help="sim steps timed per camera setting")
    parser.add_argument("--wrist", action="store_true", help="also render (and publish) the wrist camera")
    parser.add_argument("--skip-bridge", action="store_true", help="skip the ROS bridge episode")


def run(args: argparse.Namespace) -> int:
    from sim_bridge.libero_goal import check_headless_rendering

    try:
        check_headless_rendering()
    except RuntimeError as error:                # what it found, and what to do, in one line
        raise SystemExit(fail(PROG, error)) from None
    from ...benchmarks.sim import sim_benchmark

    sim_benchmark(task_id=args.task_id, max_steps=args.max_steps, image_size=args.image_size,
                  step_samples=args.step_samples, wrist_camera=args.wrist, bridge=not args.skip_bridge)
    return 0
