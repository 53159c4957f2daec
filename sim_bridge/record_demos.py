"""spec-vla-record-demos: scripted-expert demonstrations of LIBERO-GOAL tasks in LIBERO's HDF5 layout.

    spec-vla-record-demos --tasks 7,1,4 --init-states 10-49 --attempts 2 --noise 0.05 --out demos/libero_goal

One file per task (`<task name>_demo.hdf5`, sim_bridge/demonstrations.py describes the layout). Workers
split the tasks between processes, one LIBERO env each; a rerun resumes from what the files log. The
initial states default to 10-49: OpenVLA-style evaluation uses states 0-9, which demonstrations must not
come from.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_INIT_STATES = "10-49"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spec-vla-record-demos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="all", help="comma-separated LIBERO-GOAL task ids, or 'all' (every task "
                                                       "the expert has a plan for)")
    parser.add_argument("--init-states", default=DEFAULT_INIT_STATES,
                        help=f"initial states, as 'A-B' (inclusive) or a comma-separated list (default {DEFAULT_INIT_STATES})")
    parser.add_argument("--attempts", type=int, default=1, help="episodes per initial state, each with its own "
                                                                "fixture placement and noise (default 1)")
    parser.add_argument("--noise", type=float, default=0.05,
                        help="std of the noise on the executed pose actions (DART; labels stay clean; default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="base seed for fixture placement and noise (default 0)")
    parser.add_argument("--wrist", action="store_true", help="also record the wrist camera (eye_in_hand_rgb; "
                                                            "doubles the rendering time)")
    parser.add_argument("--image-size", type=int, default=None, help="camera images' side (default: the harness's 256)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each recording whole tasks (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the <task>_demo.hdf5 files")
    args = parser.parse_args(argv)
    try:
        args.init_states = parse_states(args.init_states)
    except ValueError as error:
        parser.error(f"--init-states: {error}")
    if args.attempts < 1 or args.workers < 1:
        parser.error(f"--attempts and --workers must be >= 1, got {args.attempts} and {args.workers}")
    if args.noise < 0:
        parser.error(f"--noise is a standard deviation, >= 0; got {args.noise}")
    if args.image_size is not None and args.image_size < 16:
        parser.error(f"--image-size must be >= 16, got {args.image_size}")
    return args


def parse_states(spec: str) -> list[int]:
    """'10-49' -> [10..49]; '3,5,8' -> [3, 5, 8]; within the benchmark's 50 initial states."""
    try:
        if "-" in spec:
            first, last = (int(part) for part in spec.split("-", 1))
            states = list(range(first, last + 1))
        else:
            states = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected 'A-B' or a comma-separated list of integers, got {spec!r}") from None
    if not states or any(not 0 <= state < 50 for state in states):
        raise ValueError(f"expected states within 0..49, got {spec!r}")
    return states


def _record(tasks: list[int], options: dict) -> list[dict]:
    """Record `tasks` in this process (one LIBERO env); returns one count dict per task."""
    from tqdm import tqdm

    from .constants import LIBERO_RENDER_SIZE
    from .demonstrations import record_task
    from .libero_goal import LiberoGoalEnv

    size = options["image_size"] or LIBERO_RENDER_SIZE
    total = len(tasks) * len(options["init_states"]) * options["attempts"]
    results = []
    with LiberoGoalEnv(image_size=size, wrist_camera=options["wrist"], render=False, seeding="per_episode",
                       seed=options["seed"]) as env, tqdm(total=total, desc=f"tasks {tasks}", unit="episode") as bar:
        for task_id in tasks:
            results.append(record_task(env, task_id, options["init_states"], options["attempts"], options["out"],
                                       noise=options["noise"], seed=options["seed"], wrist=options["wrist"],
                                       progress=bar.update))
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    from .expert import PLANS

    if args.tasks == "all":
        tasks = sorted(PLANS)
    else:
        try:
            tasks = [int(part) for part in args.tasks.split(",") if part.strip()]
        except ValueError:
            print(f"spec-vla-record-demos: --tasks must be 'all' or comma-separated integers, got {args.tasks!r}",
                  file=sys.stderr)
            return 2
        missing = [task for task in tasks if task not in PLANS]
        if missing or not tasks:
            print(f"spec-vla-record-demos: the expert has no plan for tasks {missing or '(none given)'}; "
                  f"it has {sorted(PLANS)}", file=sys.stderr)
            return 2
    options = {key: getattr(args, key) for key in ("init_states", "attempts", "noise", "seed", "wrist", "image_size")}
    options["out"] = str(args.out)
    if args.workers == 1 or len(tasks) == 1:
        results = _record(tasks, options)
    else:
        from concurrent.futures import ProcessPoolExecutor
        shares = [tasks[i::args.workers] for i in range(min(args.workers, len(tasks)))]
        with ProcessPoolExecutor(len(shares)) as pool:
            results = [r for share in pool.map(_record, shares, [options] * len(shares)) for r in share]
    for counts in sorted(results, key=lambda c: c["task_id"]):
        print(f"task {counts['task_id']}: {counts['successes']}/{counts['attempted']} new episodes kept "
              f"({counts['frames']} frames), {counts['skipped']} already logged, {counts['demos_in_file']} demos in "
              f"{counts['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
