"""Pure helpers behind the policy node (no ROS): robot commands from an action.

The action is in LIBERO's controller convention: six normalized deltas that the OSC controller
clips to [-1, 1] and scales to at most LIBERO_MAX_DELTA_POS_M / LIBERO_MAX_DELTA_ROT_RAD per
control step, then the gripper in OpenVLA's [0, 1] (1 = open).
"""
from __future__ import annotations

import numpy as np

from sim_bridge.constants import LIBERO_MAX_DELTA_POS_M, LIBERO_MAX_DELTA_ROT_RAD

from ..vla.action_tokenizer import validate_action


def action_to_velocity(action, control_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(linear m/s, angular rad/s) that move the robot as far in one control period as the
    LIBERO controller would in one step; the form MoveIt Servo's twist commands expect."""
    if control_hz <= 0:
        raise ValueError(f"control_hz must be positive, got {control_hz}")
    deltas = np.clip(validate_action(action)[:6], -1.0, 1.0)
    return deltas[:3] * LIBERO_MAX_DELTA_POS_M * control_hz, deltas[3:] * LIBERO_MAX_DELTA_ROT_RAD * control_hz


