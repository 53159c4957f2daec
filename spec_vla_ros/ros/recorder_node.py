"""ROS 2 node `bag_recorder`: records topics into a rosbag2 bag (MCAP) with the `rosbags`
library, so recording works where `ros2 bag` is not installed.

Messages are taken serialized (CDR, as they came off the wire) and written as they are, stamped
with their receive time. The package's own topics are subscribed from the start so their first
messages are not lost to discovery; any other topic is subscribed once a publisher shows up,
with the type that publisher announces. A subscription is reliable unless a publisher is best
effort (a typical camera driver), as `ros2 bag record` does.

The bag is closed (MCAP summary and metadata.yaml written) on SIGINT, SIGTERM or SIGHUP, after
taking the messages already delivered: a launch ends the run by signalling the recorder last.
Every `FLUSH_PERIOD_S` what was recorded since is written to the disk and fsynced (bag_writer), so
a SIGKILL or a power cut loses at most about that much; `spec-vla-analyze` reads such an
unfinished bag and `spec-vla-bag-reindex` makes it complete.
"""
from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import WriterError
from rosbags.typesys import Stores, TypesysError, get_typestore

from . import topics
from .bag_writer import FLUSH_PERIOD_S, FlushingBagWriter
from .lifecycle import GuardedSpin, destroyed_on_error, end_node, run_node, stop_event
from .node_parameters import RECORDER_PARAMETERS

NODE_NAME = "bag_recorder"
# The package's own topics (spec_vla_ros.ros.topics), by name as configured: subscribed from the start.
KNOWN_TOPICS = {topic.name: topic for topic in topics.ALL}
QUEUE_DEPTH = 100                              # recording is cheap; keep every message of a burst
GRAPH_POLL_PERIOD_S = 0.5
DRAIN_QUIET_S = 0.3                            # on shutdown: stop after this long without a message
DRAIN_MAX_S = 3.0


def bag_qos(qos: QoSProfile) -> Qos:
    """The subscription's QoS for the bag's metadata (rclpy and rosbags share the enum values)."""
    unspecified = QosTime(0, 0)
    return Qos(QosHistory(qos.history.value), qos.depth, QosReliability(qos.reliability.value),
               QosDurability(qos.durability.value), unspecified, unspecified, QosLiveliness.AUTOMATIC,
               unspecified, False)


class BagRecorder(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        with destroyed_on_error(self):  # a configuration error: the half-built node destroyed in order
            for parameter in RECORDER_PARAMETERS.values():
                self.declare_parameter(parameter.name, parameter.default, ParameterDescriptor(
                    description=parameter.description, read_only=parameter.read_only))
            self.topics = list(self.get_parameter("topics").value)
            output = self.get_parameter("output").value or f"bags/spec_vla_{datetime.now():%Y%m%d_%H%M%S}"
            self.path = Path(output)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.typestore = get_typestore(Stores.ROS2_KILTED)
            self.writer = FlushingBagWriter(self.path)
            self.writer.open()
            self.counts: dict[str, int] = {}
            self._bag_connections = {}       # resolved topic -> rosbags connection
            self._topic_subscriptions = {}   # configured topic -> rclpy subscription
            self._unrecordable = set()       # configured topics of a type rosbags or this Python lacks
            for topic in self.topics:
                if topic in KNOWN_TOPICS:     # reliable (a best-effort publisher is handled in _poll_graph)
                    durability = (DurabilityPolicy.TRANSIENT_LOCAL if KNOWN_TOPICS[topic].qos.transient_local
                                  else DurabilityPolicy.VOLATILE)
                    self._subscribe(topic, KNOWN_TOPICS[topic].msgtype, QoSProfile(
                        depth=QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE, durability=durability))
            self.create_timer(GRAPH_POLL_PERIOD_S, self._poll_graph)
            self.create_timer(FLUSH_PERIOD_S, self._flush)
            self.get_logger().info(f"recording {', '.join(self.topics)} to {self.path}")

    def close(self) -> None:
        self.writer.close()
        summary = ", ".join(f"{topic} {count}" for topic, count in sorted(self.counts.items())) or "no messages"
        self.get_logger().info(f"bag closed: {self.path} ({summary})")

    def _flush(self) -> None:
        """To the disk: a later SIGKILL or power cut keeps what was recorded until now."""
        try:
            self.writer.flush()
        except OSError as error:      # a full disk, say: keep recording, say it (rate-limited)
            self.get_logger().error(f"cannot write {self.path}: {error}", throttle_duration_sec=10.0)

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def _subscribe(self, topic: str, msgtype: str, qos: QoSProfile) -> None:
        resolved = self.resolve_topic_name(topic)
        try:
            msg_class = topics.message_class(msgtype)
            if resolved not in self._bag_connections:
                self._bag_connections[resolved] = self.writer.add_connection(
                    resolved, msgtype, typestore=self.typestore, offered_qos_profiles=[bag_qos(qos)])
                self.counts[resolved] = 0
        except (ImportError, AttributeError, TypesysError) as error:
            self.get_logger().error(f"cannot record {resolved} ({msgtype}): {error}")
            self._unrecordable.add(topic)
            return
        connection = self._bag_connections[resolved]

        def write(data: bytes) -> None:
            try:
                self.writer.write(connection, self.get_clock().now().nanoseconds, data)
            except OSError as error:   # a full disk, say: the node goes on and says so (rate-limited)
                self.get_logger().error(f"cannot write {self.path}: {error}", throttle_duration_sec=10.0)
                return
            self.counts[resolved] += 1

        self._topic_subscriptions[topic] = self.create_subscription(msg_class, topic, write, qos, raw=True)

    def _poll_graph(self) -> None:
        """Subscribe to topics that appeared; fall back to best effort for best-effort publishers."""
        for topic in self.topics:
            publishers = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
            if not publishers or topic in self._unrecordable:
                continue
            subscription = self._topic_subscriptions.get(topic)
            best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
            if subscription is None:
                transient = all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
                self._subscribe(topic, publishers[0].topic_type, QoSProfile(
                    depth=QUEUE_DEPTH,
                    reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE))
            elif best_effort and subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                self.get_logger().info(f"{topic} has a best-effort publisher: recording it best effort")
                qos = subscription.qos_profile
                qos.reliability = ReliabilityPolicy.BEST_EFFORT
                self.destroy_subscription(subscription)
                self._subscribe(topic, publishers[0].topic_type, qos)


def main(args=None) -> int:
    """Record until SIGINT/SIGTERM/SIGHUP (exit 0); a bag that cannot be created exits 2."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop_requested = stop_event((signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    node = None
    try:
        try:
            node = BagRecorder()
        except (WriterError, OSError, RuntimeError, ParameterException) as error:
            rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot record: {error}")
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin = GuardedSpin(executor, node.get_logger())
        while not stop_requested.is_set():
            spin.spin_once(timeout_sec=0.1)
        # Take what was delivered before the signal, e.g. the last action and episode result.
        last_count, quiet_since, deadline = node.message_count, time.monotonic(), time.monotonic() + DRAIN_MAX_S
        while time.monotonic() - quiet_since < DRAIN_QUIET_S and time.monotonic() < deadline:
            spin.spin_once(timeout_sec=0.05)
            if node.message_count != last_count:
                last_count, quiet_since = node.message_count, time.monotonic()
        return 0
    finally:
        if node is not None:
            node.close()                  # the bag is complete before the bounded DDS teardown
        end_node(node)


def run() -> None:
    """The node's process (its console script): lifecycle.run_node(main)."""
    run_node(main)


if __name__ == "__main__":
    run()
