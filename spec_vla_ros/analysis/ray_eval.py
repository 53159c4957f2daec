"""`spec-vla-eval --ray`: the same evaluation with its episodes spread over a Ray cluster.

The unit of work is one episode (configuration, task, episode). Each Ray actor holds one loaded
verifier and its own LIBERO-GOAL environment, and runs the episodes it is handed one after the
other, exactly as the in-process run does (`evaluate.run_episode`). Actors take one GPU each
when the policy runs on CUDA, else one CPU slot each. The driver (this process) loads no model:
it hands out episodes, appends every finished one to the same resumable `episodes.jsonl`, and
writes the same report as the in-process run.

Each episode must be determined by (task, episode) alone, whoever runs it, so this mode always
uses per-episode seeding (LiberoGoalEnv(seeding="per_episode")); the report's settings say so.

Faults:
- an actor that dies mid-episode (killed process, node lost) is replaced and its episode runs
  again on the next free actor; an exception inside an episode (e.g. in the simulator) runs that
  episode again. Either way an episode runs at most MAX_RUNS times in all (the first run and
  MAX_RUNS - 1 reruns, so an episode that kills its worker every time cannot take the cluster
  down one actor after another), then it is given up and named in RayRun.failed_episodes with
  its last error; only a finished episode is logged, so each counts once;
- a configuration whose draft cannot load on the workers fails that configuration with one line
  and the others finish;
- Ctrl-C stops the cluster work; the log keeps every finished episode and rerunning the same
  command continues where it stopped.
"""
from __future__ import annotations

import json
import os
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from sim_bridge.constants import LIBERO_EPISODES_PER_TASK, LIBERO_GOAL_NUM_TASKS

from ..decoding.spec import DecoderSpec
from ..errors import one_line
from ..policy_config import PolicyConfig

MAX_RUNS = 3                     # runs of one episode at most (its first and 2 reruns after faults)
PER_EPISODE_SEEDING = "per_episode"
LOCAL = "local"                  # `--ray` without an address: start a local Ray instance
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": a local instance binds 127.0.0.1 only


@dataclass(frozen=True)
class WorkerSpec:
    """What every actor needs to build its policy and environment (picklable, no model)."""
    base: PolicyConfig
    checkpoints: dict            # {draft kind: directory}: what DecoderSpec.parse gives each configuration
    env_options: dict            # LiberoGoalEnv keyword arguments (image_size, max_steps, seed)
    threads: int = 1             # torch threads per actor


class EpisodeWorker:
    """One Ray actor: a loaded VLAPolicy, a LIBERO-GOAL env, and the decoders built so far."""

    def __init__(self, spec: WorkerSpec):
        from sim_bridge.libero_goal import LiberoGoalEnv

        from ..policy import VLAPolicy

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.policy = VLAPolicy(spec.base)
        self.env = LiberoGoalEnv(seeding=PER_EPISODE_SEEDING, **spec.env_options)
        self.decoders = {}

    def pid(self) -> int:
        return os.getpid()

    def settings(self) -> dict:
        from .evaluate import run_settings
        return run_settings(self.env, self.policy, self.spec.checkpoints)

    def run(self, configuration_name: str, task_id: int, episode: int) -> dict:
        """The episode's log record, or {"configuration_error": reason} if its draft cannot load."""
        from .evaluate import run_episode

        configuration = DecoderSpec.parse(configuration_name, self.spec.checkpoints, self.spec.base.num_draft_tokens)
        config = self.spec.base.with_spec(configuration)
        if configuration_name not in self.decoders:
            try:
                self.decoders[configuration_name] = self.policy.build_decoder(config)
            except Exception as error:          # whatever stops the draft loading fails its configuration
                return {"configuration_error": f"{type(error).__name__}: {error}"}
        self.policy.set_decoder(self.decoders[configuration_name], config)
        record = run_episode(self.env, self.policy, task_id, episode, noise_floor=not configuration.speculative)
        return {"configuration": configuration_name, **record}

    def close(self) -> None:
        self.env.close()


@dataclass
class RayRun:
    """What happened beside the finished episodes: for the terminal and the tests."""
    workers: int = 0
    finished: int = 0
    reruns: int = 0                                     # episodes started again after a fault
    failed_configurations: dict = field(default_factory=dict)   # name -> reason
    failed_episodes: list = field(default_factory=list)         # (configuration, task, episode, reason)


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` ('auto': the running one) or start a local instance
    (address None or 'local'). Returns whether this process started Ray (and so stops it).

    A local instance listens on the loopback interface only (Ray's single-machine mode, set before
    Ray is first imported); a cluster is reached at the addresses its nodes were started with."""
    if address in (None, LOCAL):
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray

    if ray.is_initialized():
        return False
    if address in (None, LOCAL):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return True
    ray.init(address=address, log_to_driver=False)
    return False


def default_worker_count(device: str) -> int:
    """One actor per GPU of the cluster for CUDA policies, else one per CPU slot."""
    import ray

    resources = ray.cluster_resources()
    if device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if not gpus:
            raise ValueError(f"device '{device}' asks for GPUs but the Ray cluster has none "
                             f"(resources: {sorted(resources)}); use --device cpu or add GPU nodes")
        return gpus
    return max(1, int(resources.get("CPU", 1)))


def start_workers(spec: WorkerSpec, count: int) -> list:
    import ray

    gpu = spec.base.device.startswith("cuda")
    actor_class = ray.remote(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_restarts=0)(EpisodeWorker)
    return [actor_class.remote(spec) for _ in range(count)]


def run_episodes_on_ray(spec: WorkerSpec, items: list[tuple], on_record: Callable[[dict], None],
                        num_workers: int, progress: bool = True, total: int | None = None,
                        check_settings: Callable[[dict], None] | None = None,
                        on_dispatch: Callable[[int, tuple], None] | None = None) -> RayRun:
    """Run `items` [(configuration name, task, episode)] on `num_workers` actors of the connected
    cluster; every finished record goes to `on_record` (in the driver), once.

    `check_settings` receives the first actor's `evaluate.run_settings` before any episode runs
    (it refuses to mix runs with other settings); `on_dispatch(actor pid, item)` is called as an
    episode is handed to an actor (progress displays, fault-injection tests).
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    run = RayRun(workers=num_workers)
    pending = deque((item, 1) for item in items)       # (item, which run of it this is)
    per_configuration = Counter()
    wanted = Counter(item[0] for item in items)
    workers = start_workers(spec, num_workers)
    pids = dict(zip(workers, ray.get([worker.pid.remote() for worker in workers])))
    if check_settings is not None:
        check_settings(ray.get(workers[0].settings.remote()))
    idle = list(workers)
    in_flight = {}                                     # object ref -> (actor, item, which run of it)
    bar = tqdm(total=total or len(items), initial=(total or len(items)) - len(items), unit="episode",
               disable=not progress, desc=f"spec-vla-eval on Ray ({num_workers} workers)")

    def replace(actor) -> None:
        ray.kill(actor, no_restart=True)
        fresh = start_workers(spec, 1)[0]
        pids[fresh] = ray.get(fresh.pid.remote())
        idle.append(fresh)

    def run_again_or_give_up(item: tuple, attempt: int, fault: str) -> None:
        if attempt < MAX_RUNS:
            run.reruns += 1
            pending.append((item, attempt + 1))
            tqdm.write(f"{describe(item)}: {fault}; running it again (run {attempt + 1} of at most {MAX_RUNS})")
        else:
            run.failed_episodes.append((*item, fault))
            tqdm.write(f"{describe(item)}: {fault}; it ran {MAX_RUNS} times, giving it up")

    try:
        while pending or in_flight:
            while idle and pending:
                (item, attempt) = pending.popleft()
                if item[0] in run.failed_configurations:
                    continue
                actor = idle.pop()
                in_flight[actor.run.remote(*item)] = (actor, item, attempt)
                if on_dispatch is not None:
                    on_dispatch(pids[actor], item)
            if not in_flight:
                break
            [ready], _ = ray.wait(list(in_flight), num_returns=1)
            actor, item, attempt = in_flight.pop(ready)
            try:
                record = ray.get(ready)
            except RayActorError as error:              # the actor's process died mid-episode
                fault = f"its worker (pid {pids.pop(actor)}) died ({type(error).__name__})"
                replace(actor)
                run_again_or_give_up(item, attempt, fault)
                continue
            except RayTaskError as error:               # the episode raised (e.g. in the simulator)
                idle.append(actor)
                cause = error.cause
                reason = f"{type(cause).__name__}: {one_line(cause)}" if cause is not None else \
                    str(error).splitlines()[0]                # Ray's own text: a traceback
                run_again_or_give_up(item, attempt, f"raised {reason}")
                continue
            idle.append(actor)
            if "configuration_error" in record:
                if item[0] not in run.failed_configurations:
                    run.failed_configurations[item[0]] = record["configuration_error"]
                    tqdm.write(f"configuration '{item[0]}' failed: its draft could not load on the workers "
                               f"({record['configuration_error']}); the other configurations go on")
                continue
            on_record(record)
            run.finished += 1
            per_configuration[item[0]] += 1
            bar.update(1)
            bar.set_postfix_str(" ".join(f"{name} {per_configuration[name]}/{count}"
                                         for name, count in wanted.items()))
    finally:                                           # killing an actor ends the episode it runs
        bar.close()
        for actor in set(idle) | {actor for actor, _, _ in in_flight.values()}:
            ray.kill(actor, no_restart=True)
    return run


def describe(item: tuple) -> str:
    configuration, task_id, episode = item
    return f"{configuration} task {task_id} episode {episode}"


def stop_local_ray(started: bool) -> None:
    import ray

    if started and ray.is_initialized():
        ray.shutdown()


# Used by `spec-vla-eval --ray` in evaluate.py:

def evaluate_on_ray(spec: WorkerSpec, configurations: list[DecoderSpec], task_ids: list[int], episodes_per_task: int,
                    output_dir: Path, address: str | None, num_workers: int = 0, progress: bool = True,
                    on_dispatch: Callable[[int, tuple], None] | None = None):
    """The Ray counterpart of `evaluate.run_evaluation`: same log, same report, same resume rule.
    Returns (report, RayRun); the report covers the configurations that did not fail."""
    from .evaluate import EPISODES_FILE, REPORT_STEM, SETTINGS_FILE, EpisodeLog, build_report, check_settings

    output_dir = Path(output_dir)
    names = [configuration.name for configuration in configurations]
    if len(set(names)) != len(names):
        raise ValueError(f"configurations repeat: {names}")
    if not task_ids or any(not 0 <= t < LIBERO_GOAL_NUM_TASKS for t in task_ids):
        raise ValueError(f"task ids must be a non-empty list within 0..{LIBERO_GOAL_NUM_TASKS - 1}, got {task_ids}")
    if not 1 <= episodes_per_task <= LIBERO_EPISODES_PER_TASK:
        raise ValueError(f"episodes per task must be within 1..{LIBERO_EPISODES_PER_TASK}, got {episodes_per_task}")
    schedule = [(name, task_id, episode) for task_id in task_ids for episode in range(episodes_per_task)
                for name in names]
    log = EpisodeLog(output_dir / EPISODES_FILE)
    pending = [item for item in schedule if item not in log.records]
    if len(pending) < len(schedule):
        print(f"resuming {output_dir}: {len(schedule) - len(pending)} of {len(schedule)} episodes found in "
              f"{EPISODES_FILE}, {len(pending)} to run")
    run = RayRun()
    if pending:
        started = connect(address)
        try:
            workers = min(num_workers or default_worker_count(spec.base.device), len(pending))
            run = run_episodes_on_ray(spec, pending, log.append, workers, progress, total=len(schedule),
                                      check_settings=lambda settings: check_settings(output_dir, settings),
                                      on_dispatch=on_dispatch)
        finally:
            stop_local_ray(started)
    ran = [c for c in configurations if c.name not in run.failed_configurations]
    records = [log.records[(c.name, t, e)] for t in task_ids for e in range(episodes_per_task) for c in ran
               if (c.name, t, e) in log.records]
    if not records:
        return None, run
    report = build_report(records, ran, json.loads((output_dir / SETTINGS_FILE).read_text()), output_dir)
    report.write(output_dir, REPORT_STEM)
    return report, run
