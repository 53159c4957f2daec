"""Conversions between ROS 2 messages and the numpy arrays the core works on.

Images go through cv_bridge (ROS 2's on a ROS machine, the PyPI port on pip-only machines);
this module is the only place that touches it, so the nodes never depend on which one.
"""
from __future__ import annotations

import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from sensor_msgs.msg import Image

from .vla.action_tokenizer import validate_action
from .vla.constants import ACTION_DIM, ACTION_NAMES

SUPPORTED_ENCODINGS = ("rgb8", "bgr8")
_bridge = CvBridge()


def image_to_msg(rgb: np.ndarray, stamp=None, frame_id: str = "") -> Image:
    """HxWx3 uint8 RGB array -> sensor_msgs/Image (rgb8)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    msg = _bridge.cv2_to_imgmsg(np.ascontiguousarray(rgb), encoding="rgb8")
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def msg_to_image(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> HxWx3 uint8 RGB array; ValueError names what is wrong."""
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(f"image encoding '{msg.encoding}' is not supported; expected one of {SUPPORTED_ENCODINGS}")
    if msg.height == 0 or msg.width == 0 or len(msg.data) == 0:
        raise ValueError(f"image is empty ({msg.width} x {msg.height}, {len(msg.data)} bytes)")
    if len(msg.data) < msg.step * msg.height or msg.step < msg.width * 3:
        raise ValueError(f"image data has {len(msg.data)} bytes with step {msg.step}, expected at least "
                         f"{msg.width * 3 * msg.height} for {msg.width} x {msg.height} {msg.encoding}")
    if expected_size is not None and (msg.width, msg.height) != tuple(expected_size):
        raise ValueError(f"image is {msg.width} x {msg.height}, expected {expected_size[0]} x {expected_size[1]}")
    try:
        return np.ascontiguousarray(_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except (CvBridgeError, TypeError, ValueError) as error:
        raise ValueError(f"could not decode {msg.encoding} image: {error}") from error


def action_to_msg(action: np.ndarray):
    """7-DoF action -> std_msgs/Float64MultiArray with a labelled layout."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=" ".join(ACTION_NAMES), size=ACTION_DIM, stride=ACTION_DIM)]
    msg.data = [float(v) for v in validate_action(action)]
    return msg
