"""Everything that touches ROS 2 or its conventions: the policy and recorder nodes, message
conversions, topics and QoS, Fast DDS settings, the bag writer, the nodes' parameter tables, the
launch files' node graph and the pip-only runner.

The ROS-free core (vla, drafts, decoding, training, policy) never imports this package; modules
here that need no ROS to import (topics, parameter tables, decode_report, control, dds,
launch_config) stay importable without rclpy, so the LIBERO bridge and the analysis can read them.
"""
