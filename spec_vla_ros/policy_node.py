"""ROS 2 node `spec_vla_policy`: camera image + instruction -> 7-DoF action, through VLAPolicy.

Three threads, so that the executor never waits on the model:
- the executor (main thread) runs the callbacks. The camera callback converts and checks the
  image, then keeps only the newest frame (a frame replaced before use counts as dropped);
  parameter changes are validated in the on-set callback, nothing else happens there.
- the inference thread takes the newest frame, skips it if it is older than
  `stale_image_timeout_sec`, runs one action (never two at once) and publishes it.
- the loader thread builds a new decoder after a draft / decoding parameter change. The old
  decoder keeps serving meanwhile; VLAPolicy installs the new one between two actions.

A changed instruction, or an episode result on `episode` (from the LIBERO bridge), starts a new
episode for the drafts (VLAPolicy.reset_episode): earlier actions say nothing about the next task.

Per action, `decode_stats` and `/diagnostics` carry one DiagnosticStatus stamped with the source
image's stamp. Its key-values (strings as they are, everything else JSON; control.decode_values
reads them back): verifier, DecodeStats.as_dict() (draft, acceptance, tokens, verifier_passes,
accepted_per_pass, proposed_per_pass, draft_ms, verify_ms, total_ms, acceptance_length),
policy_ms (VLAPolicy.act: preprocessing + decode), image_to_action_ms (image stamp -> action
published), action, dry_run, and the node's running counts: actions, frames_received,
frames_dropped (replaced by a newer frame before use), frames_stale, inputs_rejected.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import fields

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, Float64MultiArray, String

from .control import action_to_velocity, encode_values, gripper_opening
from .policy import PolicyConfig, VLAPolicy
from .ros_conversions import action_to_msg, msg_to_image
from .topics import EPISODE_QOS, INSTRUCTION_QOS
from .vla.constants import LIBERO_CONTROL_HZ
from .vla.prompt import build_prompt

NODE_NAME = "spec_vla_policy"
_DEFAULTS = PolicyConfig()

# name: (default, description). The node declares exactly these; config files are checked against them.
PARAMETERS = {
    "verifier": (_DEFAULTS.verifier, "'miniature' (embedded toy OpenVLA, solves no task) or an OpenVLA HF "
                                     "directory; read-only"),
    "unnorm_key": (_DEFAULTS.unnorm_key, "dataset statistics key for action de-normalization; read-only"),
    "device": (_DEFAULTS.device, "torch device: cpu or cuda[:N]; read-only"),
    "dtype": (_DEFAULTS.dtype, "auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16 or float16; read-only"),
    "draft": (_DEFAULTS.draft, "draft model: none (autoregressive) | mamba | llama | history; "
                               "a change takes effect at the next action"),
    "draft_checkpoint": (_DEFAULTS.draft_checkpoint, "draft checkpoint directory, or a directory with one "
                                                     "per kind (mamba/, llama/); '' = the packaged ones for the "
                                                     "embedded miniature"),
    "num_draft_tokens": (_DEFAULTS.num_draft_tokens, "tokens the draft proposes per verifier pass (1-7)"),
    "acceptance": (_DEFAULTS.acceptance, "strict (output identical to greedy decoding) | relaxed"),
    "relaxed_threshold": (_DEFAULTS.relaxed_threshold, "relaxed acceptance: largest |draft id - verifier id| "
                                                       "accepted (0 = strict)"),
    "center_crop": (_DEFAULTS.center_crop, "take the centered 0.9-area crop OpenVLA's LIBERO models were "
                                           "trained with"),
    "control_hz": (float(LIBERO_CONTROL_HZ), "controller rate; scales per-step deltas to the velocities on "
                                             "servo/delta_twist_cmds"),
    "stale_image_timeout_sec": (1.0, "frames older than this (by header stamp) are not acted on"),
    "frame_id": ("panda_link0", "frame of servo/delta_twist_cmds (LIBERO's deltas are in the robot base frame)"),
    "dry_run": (False, "compute and log actions and statistics, publish no motion (action, twist, gripper)"),
}
READ_ONLY = ("verifier", "unnorm_key", "device", "dtype")    # they select the loaded verifier
POLICY_FIELDS = tuple(field.name for field in fields(PolicyConfig))

CAMERA_QOS = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability)
WARNING_PERIOD_S = 5.0


def check_node_settings(values: dict) -> None:
    """The parameters that are the node's own, not the policy's; ValueError with the reason."""
    if values["control_hz"] <= 0:
        raise ValueError(f"control_hz must be positive, got {values['control_hz']}")
    if values["stale_image_timeout_sec"] <= 0:
        raise ValueError(f"stale_image_timeout_sec must be positive, got {values['stale_image_timeout_sec']}")


class PolicyNode(Node):
    """The node; `start()` launches the inference and loader threads, `stop()` ends them."""

    def __init__(self):
        super().__init__(NODE_NAME)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default,
                                   ParameterDescriptor(description=description, read_only=name in READ_ONLY))
        self.values = {name: self.get_parameter(name).value for name in PARAMETERS}
        config = self._policy_config(self.values)
        VLAPolicy.validate(config)
        check_node_settings(self.values)
        self.get_logger().info(f"loading verifier '{config.verifier}' with draft '{config.draft}'")
        started = time.monotonic()
        self.policy = VLAPolicy(config)
        self.get_logger().info(f"policy ready in {time.monotonic() - started:.1f} s")

        # Shared between the threads, guarded by _condition.
        self._condition = threading.Condition()
        self._frame = None              # newest unused frame: (image, time its age counts from, header stamp)
        self._instruction = None
        self._reset_requested = False
        self._pending_config = None     # PolicyConfig waiting for the loader
        self._stopping = False
        self.counts = {"actions": 0, "frames_received": 0, "frames_dropped": 0, "frames_stale": 0,
                       "inputs_rejected": 0}
        self._threads = [threading.Thread(target=self._serve, name="inference", daemon=True),
                         threading.Thread(target=self._load, name="decoder_loader", daemon=True)]

        self._action_pub = self.create_publisher(Float64MultiArray, "action", 10)
        self._twist_pub = self.create_publisher(TwistStamped, "servo/delta_twist_cmds", 10)
        self._gripper_pub = self.create_publisher(Float64, "gripper", 10)
        self._stats_pub = self.create_publisher(DiagnosticArray, "decode_stats", 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(String, "instruction", self._on_instruction, INSTRUCTION_QOS)
        self.create_subscription(String, "episode", self._on_episode_result, EPISODE_QOS)
        self.create_subscription(Image, "camera/image_raw", self._on_image, CAMERA_QOS)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let the action in flight finish and reach its subscribers, then end the threads."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        self._action_pub.wait_for_all_acked(Duration(seconds=1))

    def _count(self, name: str) -> None:
        with self._condition:
            self.counts[name] += 1

    @staticmethod
    def _policy_config(values: dict) -> PolicyConfig:
        return PolicyConfig(**{name: values[name] for name in POLICY_FIELDS})

    # --- executor thread ------------------------------------------------------------------

    def _validate_parameters(self, parameters) -> SetParametersResult:
        """Cheap checks only; an invalid set is rejected as a whole and changes nothing."""
        values = dict(self.values, **{parameter.name: parameter.value for parameter in parameters})
        try:
            VLAPolicy.validate(self._policy_config(values))
            check_node_settings(values)
        except ValueError as error:
            self.get_logger().warning(f"rejected parameter change: {error}")
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        self.values.update({parameter.name: parameter.value for parameter in parameters})
        if any(parameter.name in POLICY_FIELDS for parameter in parameters):
            with self._condition:
                self._pending_config = self._policy_config(self.values)
                self._condition.notify_all()

    def _on_instruction(self, msg: String) -> None:
        instruction = msg.data
        try:
            build_prompt(instruction)           # ValueError for an empty or oversized instruction
        except ValueError as error:
            instruction = None
            self._count("inputs_rejected")
            self.get_logger().warning(f"ignoring instruction: {error}; no actions until a valid one arrives")
        with self._condition:
            if instruction != self._instruction:
                self._reset_requested = True
            self._instruction = instruction

    def _on_episode_result(self, _msg: String) -> None:
        with self._condition:
            self._reset_requested = True

    def _on_image(self, msg: Image) -> None:
        received = self.get_clock().now()
        self._count("frames_received")
        try:
            image = msg_to_image(msg)
        except ValueError as error:
            self._count("inputs_rejected")
            self.get_logger().warning(f"ignoring camera frame: {error}")
            return
        stamp = Time.from_msg(msg.header.stamp)
        with self._condition:
            if self._frame is not None:
                self.counts["frames_dropped"] += 1      # replaced before the inference thread took it
            # A camera that leaves the stamp unset: the frame's age counts from its receipt.
            self._frame = (image, stamp if stamp.nanoseconds else received, msg.header.stamp)
            self._condition.notify_all()

    # --- inference thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopping or self._frame is not None)
                if self._stopping:
                    return
                (image, since, stamp_msg), self._frame = self._frame, None
                instruction, reset = self._instruction, self._reset_requested
                self._reset_requested = False
            age_s = (self.get_clock().now() - since).nanoseconds * 1e-9
            if age_s > self.values["stale_image_timeout_sec"]:
                self._count("frames_stale")
                self.get_logger().warning(f"skipping a frame {age_s:.2f} s old (stale_image_timeout_sec="
                                          f"{self.values['stale_image_timeout_sec']})",
                                          throttle_duration_sec=WARNING_PERIOD_S)
                continue
            if instruction is None:
                self.get_logger().warning("no valid instruction yet; publish one on 'instruction'",
                                          throttle_duration_sec=WARNING_PERIOD_S)
                continue
            if reset:
                self.policy.reset_episode()
            started = time.perf_counter()
            try:
                action, stats = self.policy.act(image, instruction)
            except ValueError as error:
                self._count("inputs_rejected")
                self.get_logger().warning(f"no action for this frame: {error}")
                continue
            policy_ms = (time.perf_counter() - started) * 1e3
            self._publish(action, stats, stamp_msg, since, policy_ms)

    def _publish(self, action, stats, stamp_msg, since: Time, policy_ms: float) -> None:
        dry_run = self.values["dry_run"]
        if not dry_run:
            self._action_pub.publish(action_to_msg(action))
        image_to_action_ms = (self.get_clock().now() - since).nanoseconds * 1e-6
        if not dry_run:
            self._publish_commands(action)
        self._count("actions")
        with self._condition:
            counts = dict(self.counts)
        values = {"verifier": self.policy.config.verifier, **stats.as_dict(), "policy_ms": policy_ms,
                  "image_to_action_ms": image_to_action_ms, "action": [float(v) for v in action],
                  "dry_run": dry_run, **counts}
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{self.get_name()}: decode", hardware_id=self.policy.config.verifier,
            message=(f"{stats.draft} {stats.acceptance}: {stats.verifier_passes} passes, "
                     f"{stats.acceptance_length:.2f} tokens/pass, {stats.total_ms:.1f} ms"),
            values=[KeyValue(key=key, value=value) for key, value in encode_values(values)])
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = stamp_msg
        self._stats_pub.publish(diagnostics)
        self._diagnostics_pub.publish(diagnostics)
        prefix = "dry run, not published: " if dry_run else ""
        self.get_logger().info(f"{prefix}action {counts['actions']} "
                               f"[{' '.join(f'{v:.6g}' for v in action)}] {status.message}")

    def _publish_commands(self, action) -> None:
        """The action as MoveIt Servo twist (m/s, rad/s) and gripper opening, for hardware controllers."""
        linear, angular = action_to_velocity(action, self.values["control_hz"])
        twist = TwistStamped()
        twist.header.stamp = self.get_clock().now().to_msg()
        twist.header.frame_id = self.values["frame_id"]
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = map(float, linear)
        twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z = map(float, angular)
        self._twist_pub.publish(twist)
        self._gripper_pub.publish(Float64(data=gripper_opening(action)))

    # --- loader thread --------------------------------------------------------------------

    def _load(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopping or self._pending_config is not None)
                if self._stopping:
                    return
                config, self._pending_config = self._pending_config, None
            started = time.monotonic()
            try:
                decoder = self.policy.build_decoder(config)
            except (ValueError, OSError, RuntimeError) as error:
                self.get_logger().error(f"could not build the decoder for draft '{config.draft}': {error}; "
                                        f"draft '{self.policy.config.draft}' keeps serving")
                continue
            with self._condition:
                if self._pending_config is not None:
                    continue                     # superseded while loading: build the newer one
            self.policy.set_decoder(decoder, config)
            self.get_logger().info(f"draft '{config.draft}' ({config.acceptance} acceptance, "
                                   f"{config.num_draft_tokens} tokens) ready in {time.monotonic() - started:.1f} s; "
                                   "it serves from the next action")


def main(args=None) -> int:
    """Serve until SIGINT/SIGTERM (exit 0); an invalid configuration exits 2."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop_requested.set())
    node = None
    try:
        try:
            node = PolicyNode()
        except (ValueError, ParameterException) as error:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid configuration: {error}")
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.start()
        while not stop_requested.is_set():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("stopping")
        node.stop()
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
