"""`spec-vla-record-demos --out DIR`: scripted-expert demonstrations of LIBERO-GOAL tasks in
LIBERO's HDF5 layout, for `spec-vla-finetune`.

    spec-vla-record-demos --tasks 7,1,4 --init-states 10-49 --attempts 2 --noise 0.05 --out demos/libero_goal

One file per task (`<task name>_demo.hdf5`; sim_bridge/demonstrations.py describes the layout).
Workers split the tasks between processes, one LIBERO env each; a rerun resumes from what the
files log. The initial states default to 10-49: OpenVLA-style evaluation uses states 0-9, which
demonstrations must not come from. A bad argument is one line on stderr and exit status 2,
before the simulator loads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..training.arguments import CommandError
from .arguments import ArgumentParser, library_constant, run

DEFAULT_INIT_STATES = "10-49"
EPISODES_PER_TASK = library_constant("sim_bridge.constants", "LIBERO_EPISODES_PER_TASK")


def parse_states(spec: str) -> list[int]:
    """'10-49' -> [10..49]; '3,5,8' -> [3, 5, 8]; within the benchmark's initial states."""
    try:
        if "-" in spec:
            first, last = (int(part) for part in spec.split("-", 1))
            states = list(range(first, last + 1))
        else:
            states = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected 'A-B' or a comma-separated list of integers, got {spec!r}") from None
    if not states or any(not 0 <= state < EPISODES_PER_TASK for state in states):
        raise ValueError(f"expected states within 0..{EPISODES_PER_TASK - 1}, got {spec!r}")
    return states


def states_argument(text: str) -> list[int]:
    try:
        return parse_states(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def at_least(low):
    def check(text: str):
        value = type(low)(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected >= {low}, got {text}")
        return value
    return check


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="spec-vla-record-demos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="all", help="comma-separated LIBERO-GOAL task ids, or 'all' (every task "
                                                       "the expert has a plan for)")
    parser.add_argument("--init-states", type=states_argument, default=DEFAULT_INIT_STATES,
                        help=f"initial states, 'A-B' (inclusive) or a comma-separated list, within "
                             f"0..{EPISODES_PER_TASK - 1}")
    parser.add_argument("--attempts", type=at_least(1), default=1,
                        help="episodes per initial state, each with its own fixture placement and noise")
    parser.add_argument("--noise", type=at_least(0.0), default=0.05,
                        help="std of the noise on the executed pose actions (DART; labels stay clean)")
    parser.add_argument("--seed", type=int, default=0, help="base seed for fixture placement and noise")
    parser.add_argument("--wrist", action="store_true", help="also record the wrist camera (eye_in_hand_rgb; "
                                                            "doubles the rendering time)")
    parser.add_argument("--image-size", type=at_least(16), default=None,
                        help="camera images' side (default: the harness's 256)")
    parser.add_argument("--workers", type=at_least(1), default=1, help="processes, each recording whole tasks")
    parser.add_argument("--out", type=Path, required=True, help="directory for the <task>_demo.hdf5 files")
    return parser


def task_ids(text: str, planned) -> list[int]:
    """'all' (every planned task) or comma-separated ids the expert has a plan for; ValueError otherwise."""
    if text == "all":
        return sorted(planned)
    try:
        tasks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--tasks must be 'all' or comma-separated integers, got {text!r}") from None
    missing = [task for task in tasks if task not in planned]
    if missing or not tasks:
        raise ValueError(f"--tasks: the expert has no plan for {missing or '(none given)'}; it has {sorted(planned)}")
    return tasks


def record(args) -> int:
    from sim_bridge.demonstrations import record_tasks
    from sim_bridge.expert import PLANS
    from sim_bridge.libero_goal import check_headless_rendering

    try:
        tasks = task_ids(args.tasks, PLANS)
        check_headless_rendering()               # a renderer problem: one line before any worker starts
    except (ValueError, RuntimeError) as error:
        raise CommandError(str(error)) from None
    options = {key: getattr(args, key) for key in ("init_states", "attempts", "noise", "seed", "wrist", "image_size")}
    options["out"] = str(args.out)
    if args.workers == 1 or len(tasks) == 1:
        results = record_tasks(tasks, options)
    else:
        from concurrent.futures import ProcessPoolExecutor
        shares = [tasks[i::args.workers] for i in range(min(args.workers, len(tasks)))]
        with ProcessPoolExecutor(len(shares)) as pool:
            results = [r for share in pool.map(record_tasks, shares, [options] * len(shares)) for r in share]
    for counts in sorted(results, key=lambda c: c["task_id"]):
        print(f"task {counts['task_id']}: {counts['successes']}/{counts['attempted']} new episodes kept "
              f"({counts['frames']} frames), {counts['skipped']} already logged, {counts['demos_in_file']} demos in "
              f"{counts['path']}")
    return 0


def main(argv=None) -> int:
    return run("spec-vla-record-demos", record, build_parser().parse_args(argv))
