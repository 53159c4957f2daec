"""ROS 2 node `libero_goal_bridge`: LIBERO-GOAL behind the same topics as a real robot.

Publishes `camera/image_raw` (agentview, upright, rgb8), optionally `wrist_camera/image_raw`,
`instruction` (at each episode start and with every republished observation) and one
`episode` result (JSON in a std_msgs/String) per finished episode; takes 7-DoF actions on
`action`. Two modes:

- lockstep: the sim advances one step per received action, so policy latency costs nothing
  in sim time (an episode of N steps publishes N observations: none after its last step, so
  no action is asked for beyond the episode's end); with no action within `action_timeout` the observation and instruction are
  republished (fresh stamp), which also recovers from a policy that started late.
- free_run: the sim steps at `control_hz` holding the last valid action, like hardware,
  so a slow policy acts on stale observations.

All sim work runs on one worker thread (the LIBERO GL contexts live there) so callbacks and
services stay responsive. After `task_ids` x `episodes_per_task` episodes the results files are
written (sim_bridge.results) and the node exits 0. Stopped (SIGINT/SIGTERM) in the middle of an
episode, it records and publishes that episode as interrupted (steps and seconds so far) and
writes the results files with `completed: false`. The seeding mode (`seeding`) is written into
every record and the results' metadata.
"""
from __future__ import annotations

import json
import threading
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from spec_vla_ros.ros import topics
from spec_vla_ros.ros.conversions import image_to_msg
from spec_vla_ros.ros.lifecycle import GuardedSpin, end_node, run_node, stop_event

from .bridge_parameters import BRIDGE_PARAMETERS, MODES
from .libero_goal import (AGENTVIEW_CAMERA, GRIPPER_CONVENTIONS, SEEDING_MODES, WRIST_CAMERA, LiberoGoalEnv,
                          Observation, SimulatorError, check_headless_rendering)
from .results import write_results

NODE_NAME = "libero_goal_bridge"

# Newest only, but reliable: in lockstep neither an observation nor an action may be lost, and a
# reliable publisher serves both sensor-data (best effort) and default (reliable) subscribers.
LATEST_RELIABLE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
SUBSCRIBER_LOG_PERIOD_S = 10.0
ACK_TIMEOUT_S = 5.0
STOP_ACK_TIMEOUT_S = 1.0        # when stopping: subscribers may be gone already


class LiberoGoalBridge(Node):
    """The node; `start()` launches the episode worker, `stop()` ends it and closes the sim."""

    def __init__(self):
        super().__init__(NODE_NAME)
        for parameter in BRIDGE_PARAMETERS.values():
            self.declare_parameter(parameter.name, parameter.default, ParameterDescriptor(
                description=parameter.description, read_only=parameter.read_only))
        self.config = {name: self.get_parameter(name).value for name in BRIDGE_PARAMETERS}
        self._check_config()
        self.env = LiberoGoalEnv(image_size=self.config["image_size"], wrist_camera=self.config["publish_wrist"],
                                 max_steps=self.config["max_steps"], num_steps_wait=self.config["num_steps_wait"],
                                 gripper_convention=self.config["gripper_convention"], seed=self.config["seed"],
                                 seeding=self.config["seeding"])
        self.schedule = self.env.episode_schedule(self.config["task_ids"], self.config["episodes_per_task"])

        # Shared with the worker, guarded by _condition.
        self._condition = threading.Condition()
        self._pending_action = None     # newest action not yet applied
        self._request = None            # "reset_episode" | "next_task" from a service
        self._stopping = False
        self.records: list[dict] = []
        self.finished = threading.Event()
        self.exit_code = 0
        self._worker = threading.Thread(target=self._run, name="libero_sim", daemon=True)

        self._camera_pub = self.create_publisher(Image, topics.CAMERA.name, LATEST_RELIABLE)
        self._wrist_pub = (self.create_publisher(Image, topics.WRIST_CAMERA.name, LATEST_RELIABLE)
                           if self.config["publish_wrist"] else None)
        self._instruction_pub = self.create_publisher(String, topics.INSTRUCTION.name, topics.INSTRUCTION.qos_profile())
        self._episode_pub = self.create_publisher(String, topics.EPISODE.name, topics.EPISODE.qos_profile())
        self._action_topic = self.create_subscription(Float64MultiArray, topics.ACTION.name, self._on_action,
                                                      LATEST_RELIABLE).topic_name
        self.create_service(Trigger, "~/reset_episode", self._service("reset_episode"))
        self.create_service(Trigger, "~/next_task", self._service("next_task"))

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask the worker to stop at its next step (a reset may take ~10 s) and wait for it."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout_s)
        else:
            self.env.close()

    def _check_config(self) -> None:
        config = self.config
        problems = []
        if config["mode"] not in MODES:
            problems.append(f"mode must be one of {MODES}, got {config['mode']!r}")
        if config["seeding"] not in SEEDING_MODES:
            problems.append(f"seeding must be one of {SEEDING_MODES}, got {config['seeding']!r}")
        if config["gripper_convention"] not in GRIPPER_CONVENTIONS:
            problems.append(f"gripper_convention must be one of {GRIPPER_CONVENTIONS}, "
                            f"got {config['gripper_convention']!r}")
        if config["action_timeout"] <= 0 or config["control_hz"] <= 0:
            problems.append(f"action_timeout and control_hz must be positive, got "
                            f"{config['action_timeout']} and {config['control_hz']}")
        if problems:
            raise ValueError("; ".join(problems))

    # --- executor thread ------------------------------------------------------------------

    def _on_action(self, msg: Float64MultiArray) -> None:
        with self._condition:
            self._pending_action = list(msg.data)
            self._condition.notify_all()

    def _service(self, request_name: str):
        def callback(_request, response):
            with self._condition:
                if self.finished.is_set():
                    response.success, response.message = False, "all episodes are done"
                else:
                    self._request = request_name
                    self._condition.notify_all()
                    response.success = True
                    response.message = f"{request_name} takes effect before the next sim step"
            self.get_logger().info(f"service {request_name}: {response.message}")
            return response
        return callback

    # --- worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._wait_for_subscribers()
            index = 0
            while index < len(self.schedule) and not self._stopping:
                task_id, episode = self.schedule[index]
                outcome = self._run_episode(task_id, episode)
                if outcome == "stop":
                    self._record_interrupted()
                    break
                if outcome == "next_task":
                    while index < len(self.schedule) and self.schedule[index][0] == task_id:
                        index += 1
                    self.get_logger().info(f"skipping the rest of task {task_id}")
                elif outcome == "done":
                    self._publish_result(self.env.result.as_dict())
                    index += 1
            self._write_results(completed=index >= len(self.schedule))
        except Exception as error:  # the node must still shut down cleanly, say why and keep what finished
            self.get_logger().fatal(f"episode worker failed: {type(error).__name__}: {error}")
            self.exit_code = 1
            try:
                self._write_results(completed=False)
            except Exception as write_error:
                self.get_logger().error(f"results of the finished episodes not written: {write_error}")
        finally:
            self.env.close()
            self.finished.set()

    def _wait_for_subscribers(self) -> None:
        """Publishing before anyone listens would waste the first observation of the run. A
        recorder subscribes too, so also wait for the policy: a publisher on `action` (it creates
        one once its model is loaded)."""
        waited_since = last_log = time.monotonic()
        while not (self._camera_pub.get_subscription_count() and self._instruction_pub.get_subscription_count()
                   and self.count_publishers(self._action_topic)):
            if self._wait(0.1, wake_on_action=False)[0] == "stop":
                return
            if time.monotonic() - last_log > SUBSCRIBER_LOG_PERIOD_S:
                last_log = time.monotonic()
                self.get_logger().info(f"waiting {last_log - waited_since:.0f} s for subscribers on "
                                       f"{topics.CAMERA.name} and {topics.INSTRUCTION.name} and a publisher "
                                       f"on {topics.ACTION.name}")

    def _run_episode(self, task_id: int, episode: int) -> str:
        """Run one episode; returns "done", or the request or stop that cut it short."""
        instruction = self.env.tasks[task_id].instruction
        self.get_logger().info(f"task {task_id} episode {episode}: {instruction}")
        try:
            observation = self.env.reset(task_id, episode)
        except SimulatorError as error:
            self.get_logger().error(str(error))
            return "done"
        with self._condition:
            self._pending_action = None       # an answer to the previous episode's last frame
        self._publish_observation(observation, instruction)
        if self.config["mode"] == "lockstep":
            return self._lockstep(instruction)
        return self._free_run()

    def _lockstep(self, instruction: str) -> str:
        while not self.env.done:
            event, action = self._wait(self.config["action_timeout"], wake_on_action=True)
            if event == "timeout":
                self.get_logger().info(f"no action within {self.config['action_timeout']} s; "
                                       "republishing the observation")
                self._publish_observation(self.env.observation, instruction)
                continue
            if event != "action":
                return event
            stepped = self._step(action)
            if self.env.done:
                break               # the episode's last step: no observation, so no action beyond it
            if stepped:
                self._publish_observation(self.env.observation)
            else:
                self._publish_observation(self.env.observation, instruction)  # ask again
        return "done"

    def _free_run(self) -> str:
        period = 1.0 / self.config["control_hz"]
        held = self.env.noop_action
        next_tick = time.monotonic()
        lag_reported = False
        while not self.env.done:
            next_tick += period
            event, action = self._wait(max(0.0, next_tick - time.monotonic()), wake_on_action=False)
            if event not in ("action", "timeout"):
                return event
            candidate = held if action is None else action
            if self._step(candidate):
                held = candidate
                if not self.env.done:       # after the last step nothing more is asked for
                    self._publish_observation(self.env.observation)
            if time.monotonic() > next_tick + period:
                if not lag_reported:
                    self.get_logger().warning(f"the sim cannot keep up with control_hz={self.config['control_hz']}; "
                                              "running as fast as it can")
                    lag_reported = True
                next_tick = time.monotonic()
        return "done"

    def _step(self, action) -> bool:
        """One sim step; False when the action was rejected (it never reaches the sim)."""
        try:
            self.env.step(action)
        except ValueError as error:
            self.get_logger().warning(f"rejected action: {error} "
                                      f"({self.env.result.rejected_actions} rejected this episode)")
            return False
        return True

    def _wait(self, timeout_s: float, wake_on_action: bool) -> tuple[str, list | None]:
        """Sleep until stop, a service request, or (if asked) an action; then report which.

        Returns ("stop" | "reset_episode" | "next_task" | "action" | "timeout", action or None);
        a pending action is taken even on timeout.
        """
        with self._condition:
            self._condition.wait_for(lambda: self._stopping or self._request is not None
                                     or (wake_on_action and self._pending_action is not None), timeout_s)
            if self._stopping:
                return "stop", None
            if self._request is not None:
                request, self._request = self._request, None
                return request, None
            action, self._pending_action = self._pending_action, None
            return ("action", action) if action is not None else ("timeout", None)

    def _publish_observation(self, observation: Observation, instruction: str | None = None) -> None:
        """Instruction first, so a policy has it by the time the image arrives."""
        if instruction is not None:
            self._instruction_pub.publish(String(data=instruction))
        stamp = self.get_clock().now().to_msg()
        self._camera_pub.publish(image_to_msg(observation.agentview, stamp, AGENTVIEW_CAMERA))
        if self._wrist_pub is not None:
            self._wrist_pub.publish(image_to_msg(observation.wrist, stamp, WRIST_CAMERA))

    def _record_interrupted(self) -> None:
        """The episode the stop cut short, recorded as interrupted (nothing if none was running)."""
        if self.env.result is not None and not self.env.done:
            self.env.interrupt("the bridge was stopped")
            self._publish_result(self.env.result.as_dict())

    def _publish_result(self, record: dict) -> None:
        self.records.append(record)
        self._episode_pub.publish(String(data=json.dumps(record)))
        outcome = ("interrupted" if record["interrupted"] else
                   "success" if record["success"] else f"failure: {record['failure_reason']}")
        self.get_logger().info(f"task {record['task_id']} episode {record['episode']}: {outcome} "
                               f"({record['steps']} steps, {record['wall_seconds']:.1f} s)")

    def _write_results(self, completed: bool) -> None:
        if self.records:
            metadata = {"source": NODE_NAME, "completed": completed, "seeding": self.env.seeding,
                        "seed": self.env.seed, "parameters": self.config,
                        "rendering_backend": self.env.rendering_backend}
            paths = write_results(self.config["results_dir"], self.records, metadata=metadata)
            self.get_logger().info(f"results written to {paths['json']}")
        # The process exits right after; let subscribers acknowledge the last results first
        # (in short waits: the call holds the GIL, and Fast DDS may take a heartbeat period, 3 s).
        deadline = time.monotonic() + (STOP_ACK_TIMEOUT_S if self._stopping else ACK_TIMEOUT_S)
        while not self._episode_pub.wait_for_all_acked(Duration(nanoseconds=100_000_000)):
            if time.monotonic() > deadline:
                break


def main(args=None) -> int:
    """Run the bridge until all episodes are done (exit 0) or SIGINT/SIGTERM (exit 0 after
    closing the sim); invalid parameters exit 2, a failed worker exits 1."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = stop_event()
    node = None
    try:
        try:
            check_headless_rendering()          # a renderer problem: one line and exit 2 before the node starts
            node = LiberoGoalBridge()
        except (ValueError, RuntimeError, ParameterException) as error:
            rclpy.logging.get_logger(NODE_NAME).fatal(str(error))
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin = GuardedSpin(executor, node.get_logger())
        node.start()
        while not stop_requested.is_set() and not node.finished.is_set():
            spin.spin_once(timeout_sec=0.1)
        if stop_requested.is_set():
            node.get_logger().info("stopping: closing the simulator")
        node.stop()
        return node.exit_code
    finally:
        end_node(node)


def run() -> None:
    """The node's process (its console script): lifecycle.run_node(main)."""
    run_node(main)


if __name__ == "__main__":
    run()
