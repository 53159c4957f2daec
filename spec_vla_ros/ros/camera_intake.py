"""The policy node's camera intake: which message type and topic each image_transport uses, and
the watch that notices a camera that sends nothing.

Frames come as sensor_msgs/Image on `camera/image_raw` (image_transport raw) or as
sensor_msgs/CompressedImage on `<camera/image_raw, remapped>/compressed` (compressed), the topic
image_transport's compressed publisher writes. Decoding and checks: conversions.msg_to_image.
"""
from __future__ import annotations

import time

from sensor_msgs.msg import CompressedImage, Image

from . import topics
from .conversions import COMPRESSED_SUFFIX

IMAGE_TRANSPORTS = {"raw": Image, "compressed": CompressedImage}
CAMERA_CHECK_PERIOD_S = 1.0
NO_PUBLISHER_WARNING_FACTOR = 6     # no publisher at all: warn after 6 x no_frame_warning_sec (a driver may start late)


def check_image_transport(transport: str) -> None:
    if transport not in IMAGE_TRANSPORTS:
        raise ValueError(f"image_transport '{transport}' is unknown; expected one of {', '.join(IMAGE_TRANSPORTS)}")


def camera_topic(node, transport: str) -> str:
    """The camera topic for a transport: `camera/image_raw` after remapping, + '/compressed'."""
    if transport == "raw":
        return topics.CAMERA.name
    return f"{node.resolve_topic_name(topics.CAMERA.name)}/{COMPRESSED_SUFFIX}"


class CameraWatch:
    """Times since the camera last sent a frame and since it had (no) publisher; `check` says
    whether to warn. Executor thread only."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        """A new subscription: nothing seen yet."""
        self.last_frame_s = self.publisher_seen_s = None
        self.no_publisher_since_s = time.monotonic()

    def frame_arrived(self) -> None:
        self.last_frame_s = time.monotonic()

    def check(self, publishers: int, no_frame_warning_sec: float) -> tuple[str, float] | None:
        """('no_publisher', seconds) when the topic has had no publisher for NO_PUBLISHER_WARNING_FACTOR
        x no_frame_warning_sec; ('silent', seconds) when it has a publisher but no frame arrived for
        no_frame_warning_sec; else None."""
        now = time.monotonic()
        if publishers == 0:
            self.publisher_seen_s = None
            silent_s = now - max(self.no_publisher_since_s, self.last_frame_s or 0.0)
            return ("no_publisher", silent_s) if silent_s >= NO_PUBLISHER_WARNING_FACTOR * no_frame_warning_sec \
                else None
        self.no_publisher_since_s = now
        if self.publisher_seen_s is None:
            self.publisher_seen_s = now
        silent_s = now - max(self.publisher_seen_s, self.last_frame_s or 0.0)
        return ("silent", silent_s) if silent_s >= no_frame_warning_sec else None
