"""`spec-vla-eval --ray`'s fault handling (analysis/ray_eval.py), without a model or a simulator:
EpisodeWorker is replaced by a stand-in whose episodes raise, or kill their worker's process, as
their configuration name says, and count their runs in files. One local Ray instance with 1 CPU
serves the module (1 worker at a time).

What is checked: an episode runs at most MAX_RUNS times in all, whether it raised or its worker
died; one that succeeds on a rerun is logged once; each fault is reported once, on one line."""
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")    # the local instance on loopback only
ray = pytest.importorskip("ray", reason="ray is not installed")

from spec_vla_ros.analysis import ray_eval  # noqa: E402
from spec_vla_ros.analysis.ray_eval import MAX_RUNS, run_episodes_on_ray  # noqa: E402

SPEC = SimpleNamespace(base=SimpleNamespace(device="cpu"))           # all start_workers reads of a WorkerSpec


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """EpisodeWorker's stand-in: configuration 'raises' always raises, 'raises-once' on its first run;
    'dies' ends its worker's process every time, 'dies-once' on its first run; anything else
    finishes. Each run appends a line to tmp_path/<configuration>-<task>-<episode>."""
    runs_dir = str(tmp_path)

    class StandInWorker:
        def __init__(self, spec):
            self.spec = spec

        def pid(self) -> int:
            return os.getpid()

        def run(self, name: str, task_id: int, episode: int) -> dict:
            path = Path(runs_dir) / f"{name}-{task_id}-{episode}"
            with path.open("a") as runs:
                runs.write("run\n")
            count = len(path.read_text().splitlines())
            if name == "raises" or (name == "raises-once" and count == 1):
                raise RuntimeError(f"the simulator exploded\non run {count}")
            if name == "dies" or (name == "dies-once" and count == 1):
                os._exit(1)
            return {"configuration": name, "task_id": task_id, "episode": episode, "run": count}

    monkeypatch.setattr(ray_eval, "EpisodeWorker", StandInWorker)
    return lambda name, task_id=0, episode=0: len((tmp_path / f"{name}-{task_id}-{episode}").read_text().splitlines())


def run_items(items: list[tuple]) -> tuple[list[dict], object]:
    records = []
    run = run_episodes_on_ray(SPEC, items, records.append, num_workers=1, progress=False)
    return records, run


def test_an_episode_that_raises_runs_at_most_max_runs_times(local_ray, stand_in, capsys):
    records, run = run_items([("raises", 0, 0), ("raises-once", 0, 0), ("fine", 0, 0)])
    assert MAX_RUNS == 3                                  # the README's "3 runs in all (2 reruns)"
    assert stand_in("raises") == MAX_RUNS and stand_in("raises-once") == 2 and stand_in("fine") == 1
    assert run.failed_episodes == [("raises", 0, 0, "raised RuntimeError: the simulator exploded on run 3")]
    assert sorted((r["configuration"], r["run"]) for r in records) == [("fine", 1), ("raises-once", 2)]
    assert run.finished == 2 and run.reruns == (MAX_RUNS - 1) + 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("raises task 0 episode 0")] == [
        "raises task 0 episode 0: raised RuntimeError: the simulator exploded on run 1; running it again "
        "(run 2 of at most 3)",
        "raises task 0 episode 0: raised RuntimeError: the simulator exploded on run 2; running it again "
        "(run 3 of at most 3)",
        "raises task 0 episode 0: raised RuntimeError: the simulator exploded on run 3; it ran 3 times, "
        "giving it up"]
    assert len([line for line in out if line.startswith("raises-once task 0 episode 0")]) == 1


def test_a_dead_worker_is_replaced_and_its_episode_is_logged_once(local_ray, stand_in, capsys):
    records, run = run_items([("dies-once", 0, 0), ("dies", 0, 1), ("fine", 0, 2)])
    assert stand_in("dies-once") == 2 and stand_in("dies", 0, 1) == MAX_RUNS and stand_in("fine", 0, 2) == 1
    assert [(r["configuration"], r["episode"], r["run"]) for r in records if r["configuration"] == "dies-once"] == [
        ("dies-once", 0, 2)]                                # the rerun's record, once
    assert sorted(r["configuration"] for r in records) == ["dies-once", "fine"]
    [(name, task_id, episode, reason)] = run.failed_episodes
    assert (name, task_id, episode) == ("dies", 0, 1) and "died" in reason
    assert run.finished == 2 and run.reruns == 1 + (MAX_RUNS - 1)
    out = capsys.readouterr().out.splitlines()
    [died_once] = [line for line in out if line.startswith("dies-once task 0 episode 0")]
    assert "died" in died_once and died_once.endswith("running it again (run 2 of at most 3)")
    dies = [line for line in out if line.startswith("dies task 0 episode 1")]
    assert len(dies) == MAX_RUNS and dies[-1].endswith(f"it ran {MAX_RUNS} times, giving it up")
