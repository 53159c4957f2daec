"""The package's topics (DESIGN.md, "ROS interfaces"): name, message type and QoS of each, defined
once so that publishers, subscribers, the recorder and the bag readers cannot drift apart.

Importing this module needs no ROS (the bag readers use the names and types); `Topic.qos_profile()`
and `Topic.message_class()` import rclpy and the message package when called.

Names are relative, so they resolve in a node's namespace and can be remapped; readers of bags
match them by their last segments (`Topic.basename`). Types are written as rosbag2 and `ros2 topic`
write them, 'package/msg/Type'.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Qos:
    """A QoS in plain values: KEEP_LAST `depth`, reliable or best effort, volatile or transient local."""
    depth: int
    reliable: bool = True
    transient_local: bool = False


@dataclass(frozen=True)
class Topic:
    name: str          # relative (or absolute, '/diagnostics') topic name
    msgtype: str       # 'package/msg/Type'
    qos: Qos           # what the package's nodes use on it (see each topic for exceptions)

    @property
    def basename(self) -> str:
        """The last name segment: a bag of remapped or namespaced nodes reads the same."""
        return self.name.rsplit("/", 1)[-1]

    def qos_profile(self):
        """The rclpy QoSProfile (imports rclpy)."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.qos.depth,
            reliability=ReliabilityPolicy.RELIABLE if self.qos.reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if self.qos.transient_local else DurabilityPolicy.VOLATILE)

    def message_class(self):
        """The rclpy message class of `msgtype` (imports the message package)."""
        return message_class(self.msgtype)


def message_class(msgtype: str):
    """'package/msg/Type' -> the rclpy message class. ImportError or AttributeError if unknown."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


# The default QoS of a publisher or subscriber created with a queue depth of 10.
_DEFAULT = Qos(depth=10)

# Camera frames: sensor-data QoS (best effort, volatile), depth 1: only the newest frame counts.
# (The LIBERO bridge publishes reliable, depth 1, which serves best-effort subscribers as well.)
CAMERA = Topic("camera/image_raw", "sensor_msgs/msg/Image", Qos(depth=1, reliable=False))
WRIST_CAMERA = Topic("wrist_camera/image_raw", "sensor_msgs/msg/Image", Qos(depth=1, reliable=False))
# Reliable and volatile, so a plain `ros2 topic pub` reaches the policy; the bridge republishes
# the instruction with every observation it repeats.
INSTRUCTION = Topic("instruction", "std_msgs/msg/String", Qos(depth=10))
# The bridge's episode results (JSON); late joiners (a recorder, an analysis tool) still get the recent ones.
EPISODE = Topic("episode", "std_msgs/msg/String", Qos(depth=100, transient_local=True))
# The policy's outputs. (The bridge subscribes `action` reliable with depth 1: newest action only.)
ACTION = Topic("action", "std_msgs/msg/Float64MultiArray", _DEFAULT)
TWIST = Topic("servo/delta_twist_cmds", "geometry_msgs/msg/TwistStamped", _DEFAULT)
GRIPPER = Topic("gripper", "std_msgs/msg/Float64", _DEFAULT)
DECODE_STATS = Topic("decode_stats", "diagnostic_msgs/msg/DiagnosticArray", _DEFAULT)
DIAGNOSTICS = Topic("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", _DEFAULT)

ALL = (CAMERA, WRIST_CAMERA, INSTRUCTION, EPISODE, ACTION, TWIST, GRIPPER, DECODE_STATS, DIAGNOSTICS)
# What the recorder records unless told otherwise: a run's inputs, outputs and results.
RECORDED = (CAMERA, WRIST_CAMERA, INSTRUCTION, ACTION, DECODE_STATS, EPISODE)
