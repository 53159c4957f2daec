"""LiberoGoalEnv, run_episodes and the results files, without ROS.

The sim tests share one small env (64 x 64 agentview, 20-step episodes): creating a LIBERO env
costs ~10 s and each reset ~5 s on 2 cores.
"""
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim_bridge.libero_goal import LiberoGoalEnv, run_episodes, to_env_action
from sim_bridge.results import summarize, write_results
from sim_bridge.constants import LIBERO_CONTROL_HZ, LIBERO_WAIT_ACTION

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 20
STILL_OPEN = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]      # openvla convention: gripper 1 = open


# --- no simulator -------------------------------------------------------------------------

def test_openvla_gripper_convention_maps_binarizes_and_inverts():
    close_openvla, open_openvla = 0.0, 1.0
    assert to_env_action([0] * 6 + [close_openvla], "openvla")[0][-1] == 1.0     # LIBERO +1 = close
    assert to_env_action([0] * 6 + [open_openvla], "openvla")[0][-1] == -1.0     # LIBERO -1 = open
    assert to_env_action([0] * 6 + [0.2], "openvla")[0][-1] == 1.0               # binarized by sign
    assert to_env_action([0] * 6 + [0.8], "openvla")[0][-1] == -1.0
    assert to_env_action([0] * 6 + [0.8], "raw")[0][-1] == 0.8                   # raw: passed through
    with pytest.raises(ValueError, match="gripper_convention"):
        to_env_action([0] * 7, "robosuite")


def test_actions_are_validated_and_clipped():
    for bad in ([np.nan] + [0] * 6, [np.inf] + [0] * 6, [0] * 6, [0] * 8, ["left"] * 7):
        with pytest.raises(ValueError):
            to_env_action(bad, "raw")
    action, clipped = to_env_action([0.5, -0.5, 0, 0, 0, 0, -1], "raw")
    assert not clipped and action.tolist() == [0.5, -0.5, 0, 0, 0, 0, -1]
    action, clipped = to_env_action([7.0, -3.0, 0, 0, 0, 0, -1], "raw")
    assert clipped and action[:2].tolist() == [1.0, -1.0]
    assert to_env_action([0] * 6 + [5.0], "openvla")[1]                          # gripper counts too


def _record(task_id, episode, success, steps, **extra):
    return {"task_id": task_id, "task_name": f"task_{task_id}", "episode": episode,
            "instruction": f"do task {task_id}", "success": success, "steps": steps,
            "wall_seconds": steps / 10, "reset_seconds": 5.0, "sim_seconds": steps / LIBERO_CONTROL_HZ,
            "rejected_actions": 1, "clipped_actions": 0, "failure_reason": "" if success else "max_steps", **extra}


def test_results_files_report_per_task_and_overall(tmp_path):
    records = [_record(3, 0, True, 100, verifier_passes=np.float64(2.5)), _record(3, 1, False, 300),
               _record(7, 0, True, 50)]
    summary = summarize(records)
    assert summary["overall"]["success_rate"] == pytest.approx(2 / 3)
    assert [(t["task_id"], t["success_rate"], t["mean_steps"]) for t in summary["per_task"]] == [
        (3, 0.5, 200.0), (7, 1.0, 50.0)]
    assert summary["per_task"][0]["rejected_actions"] == 2

    paths = write_results(tmp_path, records, metadata={"policy": "zero"}, run_name="run")
    document = json.loads(paths["json"].read_text())
    assert document["metadata"] == {"policy": "zero"} and len(document["episodes"]) == 3
    assert document["episodes"][0]["verifier_passes"] == 2.5                    # extra fields kept
    episode_lines = paths["episodes_csv"].read_text().splitlines()
    assert len(episode_lines) == 4 and "verifier_passes" in episode_lines[0]
    task_lines = paths["tasks_csv"].read_text().splitlines()
    assert task_lines[-1].startswith("all,") and len(task_lines) == 4


def test_interrupted_episodes_are_listed_but_not_counted_as_outcomes(tmp_path):
    interrupted = _record(3, 2, False, 7, interrupted=True)
    records = [_record(3, 0, True, 100), _record(3, 1, False, 300), interrupted]
    summary = summarize(records)
    assert summary["overall"]["episodes"] == 2 and summary["overall"]["interrupted"] == 1
    assert summary["overall"]["success_rate"] == 0.5 and summary["overall"]["mean_steps"] == 200.0
    assert summarize([interrupted])["per_task"][0]["episodes"] == 0
    paths = write_results(tmp_path, records, run_name="run")
    assert json.loads(paths["json"].read_text())["episodes"][2]["interrupted"] is True
    header, *rows = paths["episodes_csv"].read_text().splitlines()
    assert "interrupted" in header.split(",") and len(rows) == 3


def test_unknown_seeding_mode_is_refused():
    with pytest.raises(ValueError, match="seeding must be one of"):
        LiberoGoalEnv(seeding="random")


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_missing_rendering_library_is_named():
    environment = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    environment.update(MUJOCO_GL="osmesa", PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", "from sim_bridge.libero_goal import check_headless_rendering as c; c()"],
        env=environment, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert completed.returncode != 0
    assert "RuntimeError" in completed.stderr and "MUJOCO_GL=osmesa" in completed.stderr
    assert "libosmesa6" in completed.stderr


# --- simulator ----------------------------------------------------------------------------

def _sim_time(env, task_id=0):
    return env.task_env(task_id).sim.data.time


@pytest.mark.sim
def test_reset_from_a_fixed_initial_state_is_deterministic(env):
    first = env.reset(0, 0)
    assert first.agentview.shape == (64, 64, 3) and first.agentview.dtype == np.uint8
    assert first.wrist is None                                               # not rendered unless asked
    for _ in range(3):
        env.step([0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    again = env.reset(0, 0)
    np.testing.assert_array_equal(again.agentview, first.agentview)
    np.testing.assert_array_equal(again.robot.eef_pos, first.robot.eef_pos)
    assert env.result.steps == 0 and not env.done


@pytest.mark.sim
def test_commanded_direction_moves_the_end_effector(env):
    env.reset(0, 0)
    for axis in range(3):
        for sign in (1.0, -1.0):
            start = env.observation.robot.eef_pos.copy()
            action = np.array(STILL_OPEN)
            action[axis] = 0.5 * sign
            for _ in range(3):
                env.step(action)
            moved = env.observation.robot.eef_pos - start
            assert sign * moved[axis] > 0.005, f"axis {axis} sign {sign}: moved {moved}"
            others = np.delete(np.abs(moved), axis)
            assert abs(moved[axis]) > 2 * others.max(), f"axis {axis} sign {sign}: moved {moved}"


@pytest.mark.sim
def test_openvla_gripper_command_closes_and_opens(env):
    env.reset(0, 0)
    open_width = env.observation.robot.gripper_qpos[0]
    for _ in range(8):
        env.step([0, 0, 0, 0, 0, 0, 0.0])              # openvla 0 = close
    closed_width = env.observation.robot.gripper_qpos[0]
    assert closed_width < open_width - 0.02, (open_width, closed_width)
    for _ in range(8):
        env.step([0, 0, 0, 0, 0, 0, 1.0])              # openvla 1 = open
    assert env.observation.robot.gripper_qpos[0] > closed_width + 0.01


@pytest.mark.sim
def test_bad_actions_never_reach_the_sim_and_are_counted(env):
    env.reset(0, 0)
    sim_time = _sim_time(env)
    for bad in ([np.nan] * 7, [np.inf] + [0] * 6, [0] * 6, [0] * 8):
        with pytest.raises(ValueError):
            env.step(bad)
    assert _sim_time(env) == sim_time and env.result.rejected_actions == 4 and env.result.steps == 0

    env.step([3.0, 0, 0, 0, 0, 0, 1.0])                # far outside [-1, 1]: clipped, applied
    assert env.result.clipped_actions == 1 and env.result.steps == 1
    assert _sim_time(env) == pytest.approx(sim_time + 1 / LIBERO_CONTROL_HZ)

    # Rejected actions spend the step budget, so a garbage-only policy still ends its episode.
    while not env.done:
        with pytest.raises(ValueError):
            env.step([np.nan] * 7)
    assert env.result.steps + env.result.rejected_actions == MAX_STEPS
    assert not env.result.success and "max_steps" in env.result.failure_reason
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(STILL_OPEN)


@pytest.mark.sim
def test_simulator_error_fails_only_its_episode(env, tmp_path, monkeypatch):
    poison_dz = 0.123
    task_env = env.task_env(0)
    real_step = task_env.step

    def faulty_step(action):
        if action[2] == poison_dz:
            raise RuntimeError("physics exploded")
        return real_step(action)

    monkeypatch.setattr(task_env, "step", faulty_step)
    calls = []

    def policy(image, instruction):
        assert image.shape == (64, 64, 3) and instruction == "open the middle drawer of the cabinet"
        calls.append(1)
        action = list(STILL_OPEN)
        if len(calls) == 2:
            action[2] = poison_dz
        return np.array(action), {"verifier_passes": 2}

    records = run_episodes(env, policy, task_ids=[0], episodes_per_task=2, results_dir=tmp_path / "results",
                           video_dir=tmp_path / "video", run_name="run",
                           policy_stats_summary=lambda stats: {"verifier_passes": sum(s["verifier_passes"]
                                                                                      for s in stats)})
    failed, completed = records
    assert failed["episode"] == 0 and not failed["success"] and failed["steps"] == 1
    assert failed["failure_reason"] == "simulator error: RuntimeError: physics exploded"
    assert completed["episode"] == 1 and completed["steps"] == MAX_STEPS
    assert "max_steps" in completed["failure_reason"]
    assert (failed["verifier_passes"], completed["verifier_passes"]) == (4, 2 * MAX_STEPS)

    document = json.loads((tmp_path / "results" / "run.json").read_text())
    assert document["overall"]["episodes"] == 2 and document["overall"]["success_rate"] == 0.0
    videos = sorted((tmp_path / "video").iterdir())
    assert [v.stem for v in videos] == ["task0_episode0_failure", "task0_episode1_failure"]
    import imageio.v2 as imageio
    assert len(imageio.mimread(videos[1])) == MAX_STEPS + 1        # first observation + one per step


@pytest.mark.sim
def test_simulator_error_in_reset_is_recorded(env, monkeypatch):
    def broken_reset():
        raise RuntimeError("model failed to compile")

    monkeypatch.setattr(env.task_env(0), "reset", broken_reset)
    [record] = run_episodes(env, lambda image, instruction: STILL_OPEN, task_ids=[0], episodes_per_task=1)
    assert not record["success"] and record["steps"] == 0
    assert "model failed to compile" in record["failure_reason"]


# --- seeding --------------------------------------------------------------------------------

MOVE = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def fresh_seed() -> int:
    seed = int.from_bytes(os.urandom(4), "little") % 2**31
    print(f"LIBERO seed {seed}")                  # pytest shows it when the test fails
    return seed


def openvla_loop(env, task_id: int, seed: int, episodes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """OpenVLA's run_libero_eval.py on the raw LIBERO env: env.seed(seed) once (get_libero_env),
    then per episode env.reset(), env.set_init_state(initial_states[i]), the dummy wait steps and
    some motion. Per episode: (model body positions, upright agentview) of its first observation."""
    raw, states = env.task_env(task_id), env.initial_states(task_id)
    raw.seed(seed)
    snapshots = []
    for episode in range(episodes):
        raw.reset()
        observation = raw.set_init_state(states[episode])
        for _ in range(env.num_steps_wait):
            observation, _, _, _ = raw.step(np.array(LIBERO_WAIT_ACTION))
        snapshots.append((raw.sim.model.body_pos.copy(), observation["agentview_image"][::-1, ::-1].copy()))
        for _ in range(3):
            raw.step(np.array(MOVE))
    return snapshots


def _snapshot(env, observation, task_id: int = 0):
    return env.task_env(task_id).sim.model.body_pos.copy(), observation.agentview


def _assert_same(actual, expected):
    np.testing.assert_array_equal(actual[0], expected[0])      # fixture placement (model body positions)
    np.testing.assert_array_equal(actual[1], expected[1])      # the first image the policy sees


@pytest.mark.sim
def test_openvla_seeding_gives_openvla_episodes_in_any_order(env, monkeypatch):
    """Episode 1 asked for first (the skipped reset replayed), and again after episode 0 with steps
    in between, is OpenVLA's episode 1: the harness's own loop on the same env gives the same."""
    seed = fresh_seed()
    monkeypatch.setattr(env, "seed", seed)
    assert env.seeding == "openvla"
    replayed = env.replayed_resets
    alone = _snapshot(env, env.reset(0, 1))
    assert env.replayed_resets == replayed + 1
    harness = openvla_loop(env, 0, seed, episodes=2)
    _assert_same(alone, harness[1])

    _assert_same(_snapshot(env, env.reset(0, 0)), harness[0])
    for _ in range(3):
        env.step(MOVE)
    _assert_same(_snapshot(env, env.reset(0, 1)), harness[1])
    assert env.replayed_resets == replayed + 1                   # in sequence: nothing replayed
    assert env.result.seeding == "openvla"


@pytest.mark.sim
def test_per_episode_seeding_makes_each_episode_reproducible_alone(env, monkeypatch):
    """per_episode: episode 1 after episode 0 is episode 1 seeded on its own (seed + 1); episode 0
    is OpenVLA's, episode 1 is not (fixtures elsewhere)."""
    seed = fresh_seed()
    monkeypatch.setattr(env, "seed", seed)
    monkeypatch.setattr(env, "seeding", "per_episode")
    first = _snapshot(env, env.reset(0, 0))
    for _ in range(3):
        env.step(MOVE)
    second = _snapshot(env, env.reset(0, 1))
    assert env.result.seeding == "per_episode"

    raw = env.task_env(0)
    raw.seed(seed + 1)                                            # episode 1 alone
    raw.reset()
    observation = raw.set_init_state(env.initial_states(0)[1])
    for _ in range(env.num_steps_wait):
        observation, _, _, _ = raw.step(np.array(LIBERO_WAIT_ACTION))
    _assert_same(second, (raw.sim.model.body_pos.copy(), observation["agentview_image"][::-1, ::-1]))

    harness = openvla_loop(env, 0, seed, episodes=2)
    _assert_same(first, harness[0])
    assert not np.array_equal(second[0], harness[1][0]), "per_episode and openvla seeding agree on episode 1"


@pytest.mark.sim
def test_an_interrupted_episode_keeps_its_steps_so_far(env):
    env.reset(0, 0)
    for _ in range(2):
        env.step(STILL_OPEN)
    env.interrupt("the bridge was stopped")
    record = env.result.as_dict()
    assert env.done and record["interrupted"] is True and record["success"] is False
    assert record["steps"] == 2 and record["wall_seconds"] > 0
    assert record["sim_seconds"] == pytest.approx(2 / LIBERO_CONTROL_HZ, abs=1e-6)
    assert record["failure_reason"] == "interrupted: the bridge was stopped"
    env.interrupt()                                               # between episodes: nothing changes
    assert env.result.as_dict() == record
