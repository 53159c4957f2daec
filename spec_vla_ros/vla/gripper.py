"""The gripper (the 7th action dimension) in its conventions, defined once.

- OpenVLA's output, after de-normalization: a value in [0, 1], 1 = open, 0 = close (LIBERO-GOAL's
  statistics leave the gripper un-normalized: its mask entry is False).
- OpenVLA's LIBERO harness maps it to [-1, 1] (2x - 1), binarizes it by sign and inverts it
  (`normalize_gripper_action`, `invert_gripper_action` in its robot_utils), which gives
- LIBERO's controller convention: -1 = open, +1 = close.

In token space the open and close bins are GRIPPER_BIN_GAP tokens apart (bins near 1.0 and 0.0).
"""
from __future__ import annotations

import numpy as np

from .action_tokenizer import token_ids_to_actions, validate_action

GRIPPER_OPEN_ABOVE = 0.5            # OpenVLA's [0, 1] value above which the harness opens (sign of 2x - 1)
GRIPPER_BIN_GAP = 128               # token distance between the open and close gripper bins


def gripper_opening(action) -> float:
    """A 7-DoF action's gripper command in [0, 1], 1 = open (OpenVLA's convention, clipped);
    ValueError for a malformed action."""
    return float(np.clip(validate_action(action)[6], 0.0, 1.0))


def to_libero_gripper(value: float) -> float:
    """OpenVLA's [0, 1] gripper value -> LIBERO's: -1.0 open, +1.0 close (0.0 exactly at 0.5), as
    OpenVLA's harness binarizes and inverts it."""
    return float(-np.sign(2.0 * value - 1.0))


def gripper_opens(token_id: int) -> bool:
    """Whether the harness would open the gripper for this action token."""
    return bool(token_ids_to_actions(token_id) > GRIPPER_OPEN_ABOVE)
