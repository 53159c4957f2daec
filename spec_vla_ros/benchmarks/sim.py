"""What the LIBERO-GOAL simulator costs, and what the ROS bridge adds on top (`spec-vla-bench sim`).

Measured on one task with a zero policy (hold still, gripper open):
- seconds per sim step: physics only, with agentview rendered, and with the wrist camera too
  (cameras are switched off and on through robosuite's observables on one env);
- one episode in-process (LiberoGoalEnv + run_episodes), the bare-env baseline;
- the same episode through the bridge node in lockstep (a subprocess, images and actions over
  real DDS); the overhead is its seconds per step over the in-process ones.

The command line: commands/benchmarks/sim.py.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import sim_bridge
from sim_bridge.constants import LIBERO_GOAL_MAX_STEPS, LIBERO_RENDER_SIZE
from sim_bridge.libero_goal import AGENTVIEW_CAMERA, WRIST_CAMERA, LiberoGoalEnv, run_episodes

BRIDGE_TIMEOUT_S = 900.0


def sim_benchmark(task_id: int = 0, max_steps: int = LIBERO_GOAL_MAX_STEPS, image_size: int = LIBERO_RENDER_SIZE,
                  step_samples: int = 20, wrist_camera: bool = False, bridge: bool = True) -> dict:
    """Run the measurements, print a table and return the numbers (seconds)."""
    numbers = {}
    with LiberoGoalEnv(image_size=image_size, wrist_camera=wrist_camera, max_steps=max_steps) as env:
        started = time.perf_counter()
        task_env = env.task_env(task_id)
        numbers["env_creation_s"] = time.perf_counter() - started
        started = time.perf_counter()
        env.reset(task_id, 0)
        numbers["first_reset_s"] = time.perf_counter() - started

        cameras = [AGENTVIEW_CAMERA] + ([WRIST_CAMERA] if wrist_camera else [])
        for label, rendered in [("step_physics_s", []), ("step_agentview_s", [AGENTVIEW_CAMERA])] + (
                [("step_agentview_wrist_s", cameras)] if wrist_camera else []):
            for camera in cameras:
                task_env.env.modify_observable(f"{camera}_image", "enabled", camera in rendered)
            numbers[label] = _median_step_seconds(task_env, step_samples)
        for camera in cameras:
            task_env.env.modify_observable(f"{camera}_image", "enabled", True)

        def hold_still(_image, _instruction):
            return env.noop_action

        [record] = run_episodes(env, hold_still, task_ids=[task_id], episodes_per_task=1)
    numbers.update(in_process_episode_s=record["wall_seconds"], in_process_steps=record["steps"],
                   reset_s=record["reset_seconds"])
    numbers["in_process_step_s"] = record["wall_seconds"] / record["steps"]
    if bridge:
        bridge_record = bridge_episode(task_id, max_steps, image_size, wrist_camera)
        numbers.update(bridge_episode_s=bridge_record["wall_seconds"], bridge_steps=bridge_record["steps"])
        numbers["bridge_step_s"] = bridge_record["wall_seconds"] / bridge_record["steps"]
        numbers["bridge_overhead"] = numbers["bridge_step_s"] / numbers["in_process_step_s"] - 1.0
    _print_table(numbers, task_id, env.tasks[task_id].instruction, image_size, wrist_camera, env.rendering_backend)
    return numbers


def _median_step_seconds(task_env, samples: int) -> float:
    """Median wall time of raw LIBERO steps (zero motion, gripper open)."""
    hold = np.array([0, 0, 0, 0, 0, 0, -1.0])
    durations = []
    for _ in range(samples):
        started = time.perf_counter()
        task_env.step(hold)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def bridge_episode(task_id: int, max_steps: int, image_size: int, wrist_camera: bool) -> dict:
    """One lockstep episode through the bridge node (subprocess) with a zero-action client here;
    returns the bridge's episode record."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64MultiArray, String

    from ..ros.conversions import action_to_msg

    domain_id = 10 + os.getpid() % 90          # keep clear of other ROS systems on this machine
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("sim_benchmark_client", context=context)
    hold = action_to_msg([0, 0, 0, 0, 0, 0, 1.0])       # the bridge's default openvla convention: 1 = open
    action_pub = node.create_publisher(Float64MultiArray, "action", 10)
    node.create_subscription(Image, "camera/image_raw", lambda _msg: action_pub.publish(hold), 1)
    node.create_subscription(String, "instruction", lambda _msg: None, 10)
    records = []
    node.create_subscription(String, "episode", lambda msg: records.append(json.loads(msg.data)), 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    with tempfile.TemporaryDirectory() as results_dir:
        command = [sys.executable, "-m", "sim_bridge.bridge_node", "--ros-args",
                   "-p", f"task_ids:=[{task_id}]", "-p", "episodes_per_task:=1", "-p", f"max_steps:={max_steps}",
                   "-p", f"image_size:={image_size}", "-p", f"publish_wrist:={str(wrist_camera).lower()}",
                   "-p", "mode:=lockstep", "-p", f"results_dir:={results_dir}"]
        environment = dict(os.environ, ROS_DOMAIN_ID=str(domain_id),  # the subprocess imports this sim_bridge
                           PYTHONPATH=os.pathsep.join([str(Path(sim_bridge.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
        log_path = Path(results_dir) / "bridge.log"
        with log_path.open("w") as log:
            bridge = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + BRIDGE_TIMEOUT_S
            while not records and bridge.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            for _ in range(30):                    # the result may still be in flight after exit
                if records:
                    break
                executor.spin_once(timeout_sec=0.1)
        finally:
            if bridge.poll() is None:
                bridge.terminate()
            bridge.wait(timeout=60)
            log_tail = log_path.read_text()[-2000:]
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)
    if not records:
        raise RuntimeError(f"the bridge produced no episode result (exit code {bridge.returncode}):\n{log_tail}")
    return records[0]


def _print_table(numbers: dict, task_id: int, instruction: str, image_size: int, wrist_camera: bool,
                 backend: str) -> None:
    cameras = "agentview + wrist" if wrist_camera else "agentview"
    print(f"LIBERO-GOAL simulator benchmark: task {task_id} ({instruction}), {image_size} x {image_size}, "
          f"{cameras}, MUJOCO_GL={backend}")
    rows = [("env creation (once per task)", numbers["env_creation_s"], "s"),
            ("reset + initial state + wait steps", numbers["reset_s"], "s"),
            ("sim step, physics only", numbers["step_physics_s"], "s"),
            ("sim step, agentview rendered", numbers["step_agentview_s"], "s")]
    if wrist_camera:
        rows.append(("sim step, agentview + wrist rendered", numbers["step_agentview_wrist_s"], "s"))
    steps = numbers["in_process_steps"]
    rows += [(f"episode, zero policy, {steps} steps, in-process", numbers["in_process_episode_s"], "s"),
             ("  per step", numbers["in_process_step_s"], "s")]
    if "bridge_step_s" in numbers:
        rows += [(f"episode through the ROS bridge (lockstep, DDS), {numbers['bridge_steps']} steps",
                  numbers["bridge_episode_s"], "s"),
                 ("  per step", numbers["bridge_step_s"], "s"),
                 ("bridge overhead over the bare env", 100.0 * numbers["bridge_overhead"], "%")]
    width = max(len(label) for label, _, _ in rows)
    for label, value, unit in rows:
        print(f"  {label:<{width}}  {value:9.4f} {unit}")
