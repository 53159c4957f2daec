"""Policy + LIBERO-GOAL bridge (+ bag recorder with record:=true); ends after the bridge's episodes.

    ros2 launch spec_vla_ros libero_goal.launch.py draft:=mamba record:=true task_ids:="[0, 3]"

The node list lives in spec_vla_ros.ros.launch_config, shared with `spec-vla-launch libero_goal`.
"""
from spec_vla_ros.ros.launch_config import generate_launch_description as describe

CONFIGURATION = "libero_goal"


def generate_launch_description():
    return describe(CONFIGURATION)
