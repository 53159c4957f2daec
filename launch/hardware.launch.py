"""Policy only, on a real robot's camera and command topics; dry_run (no motion) by default.

    ros2 launch spec_vla_ros hardware.launch.py verifier:=/models/openvla-7b-finetuned-libero-goal dry_run:=false

The node list lives in spec_vla_ros.ros.launch_config, shared with `spec-vla-launch hardware`.
"""
from spec_vla_ros.ros.launch_config import generate_launch_description as describe

CONFIGURATION = "hardware"


def generate_launch_description():
    return describe(CONFIGURATION)
