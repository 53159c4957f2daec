"""QoS of the topics one node publishes and another subscribes (DESIGN.md, "ROS interfaces").

Defined once so that publisher and subscriber cannot drift apart.
"""
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# Reliable and volatile, so a plain `ros2 topic pub` reaches the policy; the bridge republishes
# the instruction with every observation it repeats.
INSTRUCTION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
# Late joiners (a recorder, an analysis tool) still get the recent episode results.
EPISODE_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Camera frames: sensor-data QoS (best effort, volatile), depth 1: only the newest frame counts.
CAMERA_QOS = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability)
