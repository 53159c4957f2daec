"""The LIBERO bridge node's parameters (DESIGN.md, "ROS interfaces"): name, default, description,
defined once. All are read-only (set at start). No ROS and no model stack here.
"""
from __future__ import annotations

from spec_vla_ros.ros.node_parameters import Parameter, parameter_table

from .constants import (LIBERO_CONTROL_HZ, LIBERO_EPISODES_PER_TASK, LIBERO_GOAL_MAX_STEPS, LIBERO_GOAL_NUM_TASKS,
                        LIBERO_NUM_STEPS_WAIT, LIBERO_RENDER_SIZE)

MODES = ("lockstep", "free_run")


def _parameter(name: str, default, description: str) -> Parameter:
    return Parameter(name, default, description, read_only=True)


BRIDGE_PARAMETERS = parameter_table(
    _parameter("task_ids", list(range(LIBERO_GOAL_NUM_TASKS)),
               "LIBERO-GOAL task ids (0-9) to run, in this order, e.g. [0, 3]"),
    _parameter("episodes_per_task", LIBERO_EPISODES_PER_TASK,
               "episodes per task; episode i starts from the suite's fixed initial state i (max 50)"),
    _parameter("max_steps", LIBERO_GOAL_MAX_STEPS, "policy steps before an episode counts as failed (OpenVLA: 300)"),
    _parameter("num_steps_wait", LIBERO_NUM_STEPS_WAIT, "no-op steps after reset so objects settle (OpenVLA: 10)"),
    _parameter("seed", 0, "seed of LIBERO's random fixture placement (OpenVLA: 0); see seeding"),
    _parameter("seeding", "openvla",
               "openvla: env.seed(seed) once per task, then resets in sequence, as OpenVLA's harness (episodes "
               "out of order replay the skipped resets); per_episode: seed + episode before each reset, every "
               "episode reproducible on its own"),
    _parameter("image_size", LIBERO_RENDER_SIZE, "rendered image width and height in pixels (OpenVLA: 256)"),
    _parameter("mode", MODES[0],
               "lockstep: one sim step per action; free_run: step at control_hz holding the last action"),
    _parameter("action_timeout", 10.0,
               "lockstep: seconds without an action before the observation and instruction are republished"),
    _parameter("control_hz", float(LIBERO_CONTROL_HZ),
               "free_run: sim steps per wall-clock second (LIBERO's controller: 20)"),
    _parameter("publish_wrist", False,
               "also render and publish wrist_camera/image_raw (adds ~0.1 s per step on CPU)"),
    _parameter("results_dir", "libero_goal_results",
               "directory for the results JSON and CSVs, written when all episodes are done (or on shutdown)"),
    _parameter("gripper_convention", "openvla",
               "openvla: gripper in [0, 1], 1 = open, binarized and inverted as OpenVLA's harness does; raw: "
               "LIBERO's -1 = open, +1 = close"),
)
