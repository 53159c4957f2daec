"""ROS 2 node `spec_vla_policy`: camera image + instruction -> 7-DoF action, through VLAPolicy.

This file is the wiring: parameters, publishers, subscriptions, the arming service and what is
published per action. The parts it wires, each readable on its own:
- policy_workers.py: the inference and loader threads, so that the executor never waits on the
  model. The executor (main thread) runs the callbacks: the camera callback converts and checks
  the image and hands over only the newest frame; parameter changes are validated in the on-set
  callback, nothing else happens there.
- camera_intake.py: the camera's message type and topic per image_transport (raw, or
  `<camera/image_raw, remapped>/compressed`; the parameter may change at run time) and the watch
  that warns when the camera topic has a publisher but no frame arrived for
  `no_frame_warning_sec` (frames of 640x480 and more need Fast DDS's LARGE_DATA transports; see
  dds.py). Decoding: conversions.msg_to_image (encodings, padded rows, byte order, jpeg/png).
- lifecycle.py: the rate-limited log, the stop signals, the guarded spin loop and the bounded
  teardown.

Motion only when armed: `dry_run` may be switched on at any time, but off only at start
(`dry_run:=false`) or through the arming service `~/arm` (std_srvs/SetBool, data true; logged);
a parameter set that turns it off is refused with the reason.

No exception from a message, request or timer ends the node: the executor's own errors (rclpy
raises inside spin_once for a malformed SetParameters request) are caught around the spin loop
(lifecycle.GuardedSpin), counted in `inputs_rejected` and logged. A stop (SIGINT/SIGTERM) waits
STOP_WAIT_S for the action in flight; the DDS teardown after it is bounded (lifecycle).

No exception from a message leaves a callback: a bad message is counted in `inputs_rejected` and
logged (each kind of problem at once, then at most once per WARNING_PERIOD_S), and the node goes
on; an unexpected error while computing an action is logged and counted in `inference_errors`.
Every configuration error at start (parameter types, policy settings, checkpoint files) ends the
node before any model loads with exit code 2 and one line, "invalid configuration: ...".

A changed instruction, or an episode result on `episode` (from the LIBERO bridge), starts a new
episode for the drafts (VLAPolicy.reset_episode): earlier actions say nothing about the next task.

Per action, `decode_stats` and `/diagnostics` carry one DiagnosticStatus stamped with the source
image's stamp: a decode_report.DecodeReport (the action's DecodeStats, policy_ms, image_to_action_ms,
action, dry_run and the node's running counts) as key-values; DecodeReport.from_pairs reads it back.

Topic names, types and QoS: spec_vla_ros.ros.topics; parameters: spec_vla_ros.ros.policy_parameters.
"""
from __future__ import annotations

import sys
import time
from dataclasses import fields

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import SetBool

from . import topics
from .camera_intake import (CAMERA_CHECK_PERIOD_S, IMAGE_TRANSPORTS, NO_PUBLISHER_WARNING_FACTOR, CameraWatch,
                            camera_topic, check_image_transport)
from .control import action_to_velocity
from .dds import NO_FRAME_HINT, no_publisher_hint
from .decode_report import DecodeReport
from .lifecycle import GuardedSpin, RateLimitedLog, destroyed_on_error, end_node, exit_process, run_node, stop_event
from .node_arguments import check_node_arguments
from ..errors import one_line
from ..policy_config import PolicyConfig
from .policy_parameters import POLICY_PARAMETERS
from .conversions import action_to_msg, msg_to_image
from .policy_workers import PolicyWorkers
from ..vla.gripper import gripper_opening
from ..vla.prompt import build_prompt
from ..vla.threads import apply_threads, check_threads

NODE_NAME = "spec_vla_policy"
RCLError = _rclpy.RCLError
POLICY_FIELDS = tuple(field.name for field in fields(PolicyConfig))
WARNING_PERIOD_S = 5.0
STOP_WAIT_S = 5.0                   # for the action in flight at a stop, then the threads are left behind
ARM_SERVICE = "~/arm"               # std_srvs/SetBool: the one way to turn motion on at run time


def check_node_settings(values: dict) -> None:
    """The parameters that are the node's own, not the policy's; ValueError with the reason."""
    if values["control_hz"] <= 0:
        raise ValueError(f"control_hz must be positive, got {values['control_hz']}")
    if values["stale_image_timeout_sec"] <= 0:
        raise ValueError(f"stale_image_timeout_sec must be positive, got {values['stale_image_timeout_sec']}")
    if values["no_frame_warning_sec"] <= 0:
        raise ValueError(f"no_frame_warning_sec must be positive, got {values['no_frame_warning_sec']}")
    check_threads(values["threads"])
    check_image_transport(values["image_transport"])


class PolicyNode(Node):
    """The node; `start()` launches the inference and loader threads, `stop()` ends them.

    Raises ValueError or a ParameterException for an invalid configuration, before any model loads."""

    def __init__(self):
        super().__init__(NODE_NAME)
        with destroyed_on_error(self):   # a configuration error: the half-built node destroyed in order
            for parameter in POLICY_PARAMETERS.values():
                self.declare_parameter(parameter.name, parameter.default, ParameterDescriptor(
                    description=parameter.description, read_only=parameter.read_only))
            self.values = {name: self.get_parameter(name).value for name in POLICY_PARAMETERS}
            config = self._policy_config(self.values)
            check_node_settings(self.values)
            config.spec                                    # the decoding fields: refused before the model stack loads
            config.check_compile()
            from ..policy import VLAPolicy                 # the model stack (torch, transformers): seconds to import
            resolved = VLAPolicy.validate(config)          # the draft checkpoint, checked once, loaded from this
            self.report = RateLimitedLog(self.get_logger())
            threads = apply_threads(self.values["threads"])
            self.get_logger().info(f"loading verifier '{config.verifier}' with draft '{config.draft}' "
                                   f"({threads} torch thread{'s' if threads != 1 else ''})")
            started = time.monotonic()
            self.policy = VLAPolicy(config, resolved)
            warm_up = self.policy.warm_up_seconds
            self.get_logger().info(f"policy ready in {time.monotonic() - started:.1f} s"
                                   + (f" (of it {warm_up:.1f} s compiling the verifier's passes)" if warm_up else ""))
            if self.policy.compile_error:
                self.get_logger().warning(self.policy.compile_error)

        self.workers = PolicyWorkers(self.policy, lambda: self.get_clock().now(), self.values, self._publish,
                                     self.get_logger(), self.report)
        self._validated = None          # executor thread: (PolicyConfig, ResolvedDraft) of the last accepted change
        self._camera_watch = CameraWatch()

        self._action_pub = self.create_publisher(Float64MultiArray, topics.ACTION.name, topics.ACTION.qos_profile())
        self._twist_pub = self.create_publisher(TwistStamped, topics.TWIST.name, topics.TWIST.qos_profile())
        self._gripper_pub = self.create_publisher(Float64, topics.GRIPPER.name, topics.GRIPPER.qos_profile())
        self._stats_pub = self.create_publisher(DiagnosticArray, topics.DECODE_STATS.name,
                                                topics.DECODE_STATS.qos_profile())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS.name,
                                                      topics.DIAGNOSTICS.qos_profile())
        self.create_subscription(String, topics.INSTRUCTION.name, self._guarded(self._on_instruction, "instruction"),
                                 topics.INSTRUCTION.qos_profile())
        self.create_subscription(String, topics.EPISODE.name,
                                 self._guarded(self._on_episode_result, "episode result"), topics.EPISODE.qos_profile())
        self._camera = None
        self._subscribe_camera(self.values["image_transport"])
        self.create_timer(CAMERA_CHECK_PERIOD_S, self._guarded(self._check_camera, "camera check", count=False))
        self._arming = False            # True only while the arming service itself turns dry_run off
        self.create_service(SetBool, ARM_SERVICE, self._guarded(self._on_arm, "arming request", count=False))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._guarded(self._apply_parameters, "parameter change", count=False))

    def _subscribe_camera(self, transport: str) -> None:
        if self._camera is not None:
            self.destroy_subscription(self._camera)
        self._camera = self.create_subscription(IMAGE_TRANSPORTS[transport], camera_topic(self, transport),
                                                self._guarded(self._on_image, "camera frame"),
                                                topics.CAMERA.qos_profile())
        self._camera_watch.restart()
        self.get_logger().info(f"camera: {IMAGE_TRANSPORTS[transport].__name__} on {self._camera.topic_name}")

    def _guarded(self, callback, what: str, count: bool = True):
        """`callback` such that no exception leaves it: counted in inputs_rejected (for messages)
        and logged, rate-limited."""
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as error:  # noqa: BLE001 -- a message must never end the node
                if count:
                    self._count("inputs_rejected")
                self.report("error", f"ignored a {what}: {type(error).__name__}: {one_line(error)}")
            return None
        return guarded

    def start(self) -> None:
        self.workers.start()

    def stop(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Let the action in flight finish and reach its subscribers, then end the threads."""
        self.workers.stop(timeout_s)
        self._action_pub.wait_for_all_acked(Duration(seconds=1))

    def _count(self, name: str) -> None:
        self.workers.count(name)

    @staticmethod
    def _policy_config(values: dict) -> PolicyConfig:
        return PolicyConfig(**{name: values[name] for name in POLICY_FIELDS})

    # --- executor thread ------------------------------------------------------------------

    def _validate_parameters(self, parameters) -> SetParametersResult:
        """Cheap checks only; an invalid set is rejected as a whole and changes nothing."""
        try:
            values = dict(self.values, **{parameter.name: parameter.value for parameter in parameters})
            if self.values["dry_run"] and values["dry_run"] is False and not self._arming:
                raise ValueError(f"dry_run cannot be turned off by a parameter set; motion is turned on at start "
                                 f"(dry_run:=false) or by the arming service {self.resolve_service_name(ARM_SERVICE)} "
                                 f"(std_srvs/SetBool, data: true)")
            check_node_settings(values)
            config = self._policy_config(values)
            from ..policy import validate_config       # loaded by now (__init__)
            self._validated = (config, validate_config(config))
        except Exception as error:  # noqa: BLE001 -- whatever it is, the change is refused, the node goes on
            reason = one_line(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {one_line(error)}"
            self.get_logger().warning(f"rejected parameter change: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters) -> None:
        previous_transport = self.values["image_transport"]
        self.values.update({parameter.name: parameter.value for parameter in parameters})
        if self.values["image_transport"] != previous_transport:
            self._subscribe_camera(self.values["image_transport"])
        if any(parameter.name in POLICY_FIELDS for parameter in parameters):
            config = self._policy_config(self.values)
            validated_config, resolved = self._validated or (None, None)
            self.workers.request_decoder(config, resolved if validated_config == config else None)

    def _on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """Arm (data true: dry_run off, motion published from the next action) or disarm (data
        false: dry_run on). Logged either way; with SROS2 only enclaves permitted to call it can."""
        self._arming = request.data
        try:
            result = self.set_parameters([rclpy.parameter.Parameter("dry_run", value=not request.data)])[0]
        finally:
            self._arming = False
        response.success = result.successful
        state = "ARMED: motion commands are published from the next action" if request.data else \
            "disarmed: dry run, no motion is published"
        response.message = state if result.successful else result.reason
        if result.successful:
            self.get_logger().warning(f"{state} (request on {self.resolve_service_name(ARM_SERVICE)})")
        return response

    def _on_instruction(self, msg: String) -> None:
        instruction = msg.data
        try:
            build_prompt(instruction)           # ValueError for an empty or oversized instruction
        except ValueError as error:
            instruction = None
            self._count("inputs_rejected")
            self.report("warning", f"ignoring instruction: {one_line(error)}; no actions until a valid one arrives")
        self.workers.set_instruction(instruction)

    def _on_episode_result(self, _msg: String) -> None:
        self.workers.request_reset()

    def _on_image(self, msg: Image | CompressedImage) -> None:
        received = self.get_clock().now()
        self._camera_watch.frame_arrived()
        self._count("frames_received")
        try:
            image = msg_to_image(msg)
        except ValueError as error:
            self._count("inputs_rejected")
            self.report("warning", f"ignoring camera frame: {one_line(error)}")
            return
        stamp = Time.from_msg(msg.header.stamp)
        # A camera that leaves the stamp unset: the frame's age counts from its receipt.
        self.workers.offer_frame(image, stamp if stamp.nanoseconds else received, msg.header.stamp)

    def _check_camera(self) -> None:
        """Warn while the camera topic has a publisher but no frame has arrived for a while, and
        (less urgently) while it has had no publisher at all for a longer while."""
        publishers = self.count_publishers(self._camera.topic_name)
        finding = self._camera_watch.check(publishers, self.values["no_frame_warning_sec"])
        if finding is None:
            return
        kind, silent_s = finding
        if kind == "no_publisher":
            self.get_logger().warning(f"no publisher on camera topic {self._camera.topic_name} for "
                                      f"{silent_s:.0f} s; {no_publisher_hint()}",
                                      throttle_duration_sec=NO_PUBLISHER_WARNING_FACTOR * WARNING_PERIOD_S)
        else:
            self.get_logger().warning(
                f"camera topic {self._camera.topic_name} has {publishers} publisher(s) but no frame arrived for "
                f"{silent_s:.0f} s; likely cause: {NO_FRAME_HINT}", throttle_duration_sec=WARNING_PERIOD_S)

    # --- publishing (called by the inference thread) ---------------------------------------

    def _publish(self, action, stats, stamp_msg, since: Time, policy_ms: float) -> None:
        dry_run = self.values["dry_run"]
        if not dry_run:
            self._action_pub.publish(action_to_msg(action))
        image_to_action_ms = (self.get_clock().now() - since).nanoseconds * 1e-6
        if not dry_run:
            self._publish_commands(action)
        self._count("actions")
        counts = self.workers.counts_now()
        report = DecodeReport(stats, verifier=self.policy.config.verifier, policy_ms=policy_ms,
                              image_to_action_ms=image_to_action_ms, action=[float(v) for v in action],
                              dry_run=dry_run, **counts)
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{self.get_name()}: decode", hardware_id=self.policy.config.verifier,
            message=(f"{stats.draft} {stats.acceptance}: {stats.verifier_passes} passes, "
                     f"{stats.acceptance_length:.2f} tokens/pass, {stats.total_ms:.1f} ms"),
            values=[KeyValue(key=key, value=value) for key, value in report.to_pairs()])
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


def main(args=None) -> int:
    """Serve until SIGINT/SIGTERM (exit 0); an invalid configuration exits 2 with one line."""
    try:
        # Checked here first, so the one line below is the only one: rcl would add an [ERROR] line of its own.
        check_node_arguments(list(sys.argv if args is None else args), NODE_NAME)
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as error:  # noqa: BLE001 -- rcl refuses the command line or the parameters file
        return invalid_configuration(error)
    stop_requested = stop_event()
    node = None
    try:
        try:
            node = PolicyNode()
        except (ValueError, ParameterException) as error:
            invalid_configuration(error)
            # At once, without the teardown: in CI a refused node crashed (exit -11) after its line, while
            # the half-built node and the participant were torn down; a node that never started has nothing
            # to close.
            exit_process(2)
        except RCLError as error:      # rcl cannot create the node, e.g. ROS_SECURITY_ENABLE without the plugins
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start the node: {one_line(error)}")
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin = GuardedSpin(executor, node.get_logger(), on_error=lambda: node._count("inputs_rejected"))
        node.start()
        while not stop_requested.is_set():
            spin.spin_once(timeout_sec=0.1)
        node.get_logger().info("stopping")
        node.stop()
        return 0
    finally:
        end_node(node)


def invalid_configuration(error: BaseException) -> int:
    """The one line every configuration error at start ends with; exit code 2."""
    rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid configuration: {one_line(error)}")
    return 2


def run() -> None:
    """The node's process (its console script): lifecycle.run_node(main)."""
    run_node(main)


if __name__ == "__main__":
    run()
