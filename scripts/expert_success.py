#!/usr/bin/env python3
"""Success of the scripted LIBERO-GOAL expert (sim_bridge/expert.py) over the benchmark's initial states.

Runs the expert on every asked task from each of its fixed initial states (50 per task by default;
OpenVLA's seeding: one env seed per task, resets in sequence), renders nothing, and writes a JSON file
with, per task: episodes, successes, success rate, median steps (successful episodes and all), seconds
per episode (reset included) and how often the position command came near the expert's speed cap.

    nice -n 10 .venv/bin/python scripts/expert_success.py --out docs/expert/expert_success.json

Workers split the tasks between processes (one LIBERO env each); the default is 1 worker, as the
machines this runs on are shared.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NEAR_CAP = 0.9                          # a position command above this fraction of max_speed counts as "near the cap"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="all",
                        help="comma-separated LIBERO-GOAL task ids, or 'all' (the tasks the expert has plans for)")
    parser.add_argument("--episodes", type=int, default=50, help="initial states per task, from 0 (default 50: all)")
    parser.add_argument("--first-episode", type=int, default=0, help="first initial state (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes, each running whole tasks (default 1)")
    parser.add_argument("--noise", type=float, default=0.0, help="std of the noise added to executed pose actions")
    parser.add_argument("--seed", type=int, default=0, help="env seed (OpenVLA's seeding) and noise seed")
    parser.add_argument("--seeding", choices=("openvla", "per_episode"), default="openvla")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "expert" / "expert_success.json")
    parser.add_argument("--episodes-out", action="store_true", help="also list every episode's record in the file")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.first_episode < 0 or args.first_episode + args.episodes > 50:
        parser.error(f"need 0 <= --first-episode and --first-episode + --episodes <= 50 (the benchmark's initial "
                     f"states); got {args.first_episode} + {args.episodes}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.noise < 0:
        parser.error(f"--noise is a standard deviation, >= 0; got {args.noise}")
    return args


def task_ids(spec: str) -> list[int]:
    from sim_bridge.expert import PLANS

    if spec == "all":
        return sorted(PLANS)
    try:
        ids = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--tasks must be 'all' or comma-separated integers, got {spec!r}")
    missing = [t for t in ids if t not in PLANS]
    if missing or not ids:
        raise SystemExit(f"--tasks: the expert has no plan for {missing or 'an empty list'}; it has {sorted(PLANS)}")
    return ids


def run_tasks(tasks: list[int], args_dict: dict) -> list[dict]:
    """Every episode of `tasks` in one process; returns one record per episode."""
    import numpy as np

    from sim_bridge.expert import ExpertSettings, run_expert_episode
    from sim_bridge.libero_goal import LiberoGoalEnv

    settings = ExpertSettings(noise=args_dict["noise"], seed=args_dict["seed"])
    records = []
    with LiberoGoalEnv(render=False, seed=args_dict["seed"], seeding=args_dict["seeding"]) as env:
        for task_id in tasks:
            for episode in range(args_dict["first_episode"], args_dict["first_episode"] + args_dict["episodes"]):
                started = time.perf_counter()
                result = run_expert_episode(env, task_id, episode, settings)
                position = np.abs(result.actions[:, :3]) if len(result.actions) else np.zeros((0, 3))
                record = dict(result.record, episode_seconds=time.perf_counter() - started,
                              position_components=int(position.size),
                              near_cap=int(np.sum(position > NEAR_CAP * settings.max_speed)),
                              max_abs_action=float(np.abs(result.actions[:, :6]).max()) if len(result.actions) else 0.0)
                records.append(record)
                print(f"task {task_id} episode {episode}: {'success' if record['success'] else 'failure'} after "
                      f"{record['steps']} steps ({record['episode_seconds']:.1f} s)", flush=True)
    return records


def summarize(records: list[dict]) -> list[dict]:
    import numpy as np

    rows = []
    for task_id in sorted({r["task_id"] for r in records}):
        mine = [r for r in records if r["task_id"] == task_id]
        successes = [r for r in mine if r["success"]]
        rows.append({
            "task_id": task_id, "instruction": mine[0]["instruction"], "episodes": len(mine),
            "successes": len(successes), "success_rate": len(successes) / len(mine),
            "median_steps_success": float(np.median([r["steps"] for r in successes])) if successes else None,
            "max_steps_success": max((r["steps"] for r in successes), default=None),
            "median_steps": float(np.median([r["steps"] for r in mine])),
            "mean_episode_seconds": float(np.mean([r["episode_seconds"] for r in mine])),
            "regrasps": int(sum(r.get("regrasps", 0) for r in mine)),
            "near_cap_fraction": (sum(r["near_cap"] for r in mine) / max(1, sum(r["position_components"] for r in mine))),
            "failed_episodes": [r["episode"] for r in mine if not r["success"]],
        })
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tasks = task_ids(args.tasks)
    args_dict = {k: getattr(args, k) for k in ("noise", "seed", "seeding", "episodes", "first_episode")}
    started = time.perf_counter()
    if args.workers == 1 or len(tasks) == 1:
        records = run_tasks(tasks, args_dict)
    else:
        from concurrent.futures import ProcessPoolExecutor
        shares = [tasks[i::args.workers] for i in range(min(args.workers, len(tasks)))]
        with ProcessPoolExecutor(len(shares)) as pool:
            records = [r for share in pool.map(run_tasks, shares, [args_dict] * len(shares)) for r in share]
    rows = summarize(records)
    from sim_bridge.expert import ExpertSettings
    document = {
        "what": "scripted LIBERO-GOAL expert (sim_bridge/expert.py) on the benchmark's fixed initial states, "
                "nothing rendered",
        "command": "scripts/expert_success.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {**args_dict, "expert": asdict(ExpertSettings(noise=args.noise, seed=args.seed)),
                     "max_steps": 300, "near_cap": f"|position command| > {NEAR_CAP} x max_speed"},
        "machine": {"cpu_count": os.cpu_count(), "workers": args.workers},
        "wall_seconds": time.perf_counter() - started,
        "tasks": rows,
    }
    if args.episodes_out:
        document["episodes"] = records
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, default=float) + "\n")
    print(f"\n{'task':>4}  {'success':>9}  {'median steps':>12}  instruction")
    for row in rows:
        print(f"{row['task_id']:>4}  {row['successes']:>3}/{row['episodes']:<3}    {row['median_steps_success'] or '-':>10}"
              f"  {row['instruction']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
