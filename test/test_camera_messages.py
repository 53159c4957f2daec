"""Camera messages -> RGB arrays (ros_conversions), without DDS: every supported layout decodes to
the same pixels as the equivalent rgb8 frame, padded rows and byte order are honoured, anything
else is refused with a ValueError naming the problem, and nothing else ever escapes.

Random images come from a fresh seed per test, printed in the test's name on failure."""
import os

import numpy as np
import pytest

pytest.importorskip("sensor_msgs", reason="ROS 2 message packages are not installed")

import cv2  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from spec_vla_ros.ros.conversions import (PIXEL_BYTES, SUPPORTED_ENCODINGS, compressed_codec,  # noqa: E402
                                          image_to_compressed_msg, image_to_msg, msg_to_image)

SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture
def rng(request):
    print(f"seed {SEED}")
    return np.random.default_rng([SEED, len(request.node.name)])


def random_rgb(rng, height=None, width=None) -> np.ndarray:
    height = height or int(rng.integers(16, 80))
    width = width or int(rng.integers(16, 80))
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str, big_endian: bool = False, padding: int = 0, rng=None) -> Image:
    """An Image of `pixels` (HxWxC or HxW, uint8 or uint16) with `padding` junk bytes after each row."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    junk = (rng or np.random.default_rng()).integers(0, 256, (height, padding), dtype=np.uint8)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                step=rows.shape[1] + padding)
    msg.data = np.concatenate([rows, junk], axis=1).tobytes()
    return msg


def equivalents(rgb: np.ndarray, rng) -> dict:
    """encoding -> pixels in that layout showing the same RGB image (alpha random, grey for mono)."""
    alpha = rng.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)
    eight = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.concatenate([rgb, alpha], axis=2),
             "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2), "mono8": rgb[..., 0]}
    sixteen = {name.replace("8", "16"): pixels.astype(np.uint16) * 257 for name, pixels in eight.items()}
    return {**eight, **sixteen}


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    return np.repeat(rgb[..., :1], 3, axis=2) if encoding.startswith("mono") else rgb


def test_every_supported_encoding_gives_the_rgb8_pixels(rng):
    rgb = random_rgb(rng)
    layouts = equivalents(rgb, rng)
    assert set(layouts) == set(SUPPORTED_ENCODINGS)
    for encoding, pixels in layouts.items():
        for big_endian in (False, True):
            for padding in (0, int(rng.integers(1, 64))):
                msg = raw_msg(pixels, encoding, big_endian, padding, rng)
                image = msg_to_image(msg)
                assert image.dtype == np.uint8 and image.flags.c_contiguous, encoding
                np.testing.assert_array_equal(image, expected_rgb(rgb, encoding),
                                              err_msg=f"{encoding} big-endian {big_endian} padding {padding}")


def test_rgb8_round_trip_and_expected_size(rng):
    rgb = random_rgb(rng)
    msg = image_to_msg(rgb, frame_id="agentview")
    assert (msg.encoding, msg.step, msg.is_bigendian, msg.header.frame_id) == ("rgb8", rgb.shape[1] * 3, 0,
                                                                                 "agentview")
    np.testing.assert_array_equal(msg_to_image(msg, expected_size=(rgb.shape[1], rgb.shape[0])), rgb)
    with pytest.raises(ValueError, match="expected 7 x 5"):
        msg_to_image(msg, expected_size=(7, 5))


def test_padded_rows_are_cut_not_shifted(rng):
    """The bug this guards against: step > width x 3 decoded as if unpadded shifts every row."""
    rgb = random_rgb(rng)
    padded = raw_msg(rgb, "rgb8", padding=int(rng.integers(1, 33)), rng=rng)
    assert padded.step > rgb.shape[1] * 3
    np.testing.assert_array_equal(msg_to_image(padded), rgb)


def test_sixteen_bit_samples_are_scaled_and_byte_swapped(rng):
    values = rng.integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    little, big = raw_msg(values, "rgb16"), raw_msg(values, "rgb16", big_endian=True)
    assert bytes(little.data) != bytes(big.data)
    np.testing.assert_array_equal(msg_to_image(little), msg_to_image(big))


def test_sixteen_bit_samples_are_truncated_not_rounded():
    """Every 16-bit value v becomes floor(v x 255 / 65535), as documented. Half the values tell this
    apart from rounding (v = 129 is 0.502: truncated 0, rounded 1) and from taking the high byte
    (v = 256: 0, not 1), so a converter doing either fails here; 8-bit x 257 frames cannot tell."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    truncated = (values.astype(np.int64) * 255 // 65535).astype(np.uint8)
    rounded = ((values.astype(np.int64) * 510 + 65535) // 131070).astype(np.uint8)
    assert (truncated != rounded).sum() == (truncated != values >> 8).sum() == 32640
    for encoding, pixels in (("mono16", values), ("rgb16", np.stack([values, values[::-1], values.T], axis=2))):
        for big_endian in (False, True):
            image = msg_to_image(raw_msg(pixels, encoding, big_endian))
            expected = truncated[..., None].repeat(3, axis=2) if encoding == "mono16" else \
                np.stack([truncated, truncated[::-1], truncated.T], axis=2)
            np.testing.assert_array_equal(image, expected, err_msg=f"{encoding} big-endian {big_endian}")
    png = CompressedImage(format="mono16; png compressed mono16")
    png.data = cv2.imencode(".png", values)[1].tobytes()
    np.testing.assert_array_equal(msg_to_image(png), truncated[..., None].repeat(3, axis=2))


@pytest.mark.parametrize("format_string", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8"])
def test_png_is_lossless(rng, format_string):
    rgb = random_rgb(rng)
    msg = image_to_compressed_msg(rgb, "png")
    msg.format = format_string
    np.testing.assert_array_equal(msg_to_image(msg), rgb)


@pytest.mark.parametrize("format_string", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8"])
def test_jpeg_decodes_to_the_encoded_colours(rng, format_string):
    """A smooth image survives JPEG at quality 95 closely, channels not swapped."""
    height, width = 64, 80
    y, x = np.mgrid[0:height, 0:width]
    offsets = rng.integers(0, 100, 3)
    rgb = np.stack([(x * 2 + offsets[0]), (y * 2 + offsets[1]), ((x + y) + offsets[2])], axis=2).astype(np.uint8)
    msg = image_to_compressed_msg(rgb, "jpeg")
    msg.format = format_string
    decoded = msg_to_image(msg)
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 2


def test_grey_and_sixteen_bit_png(rng):
    grey = random_rgb(rng)[..., 0]
    msg = CompressedImage(format="mono8; png compressed mono8")
    msg.data = cv2.imencode(".png", grey)[1].tobytes()
    np.testing.assert_array_equal(msg_to_image(msg), np.repeat(grey[..., None], 3, axis=2))
    rgb = random_rgb(rng)
    msg = CompressedImage(format="rgb16; png compressed bgr16")
    msg.data = cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257)[1].tobytes()
    np.testing.assert_array_equal(msg_to_image(msg), rgb)


def test_compressed_formats():
    assert compressed_codec("rgb8; jpeg compressed bgr8") == compressed_codec("JPEG") == "jpeg"
    assert compressed_codec("mono16; png compressed mono16") == compressed_codec("png") == "png"
    for bad, reason in (("", "names no codec"), ("theora", "names no codec"),
                        ("16UC1; compressedDepth png", "depth image")):
        with pytest.raises(ValueError, match=reason):
            compressed_codec(bad)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "bayer_rggb8", "yuv422", "nv12", "8UC3", "RGB8", ""])
def test_unsupported_encodings_are_refused_with_the_list(rng, encoding):
    msg = image_to_msg(random_rgb(rng))
    msg.encoding = encoding
    with pytest.raises(ValueError, match=f"'{encoding}' is not supported; expected one of rgb8, bgr8") as error:
        msg_to_image(msg)
    assert all(name in str(error.value) for name in SUPPORTED_ENCODINGS)


def test_inconsistent_layouts_are_refused(rng):
    rgb = random_rgb(rng)
    height, width = rgb.shape[:2]

    def refused(reason, **fields):
        msg = image_to_msg(rgb)
        for name, value in fields.items():
            setattr(msg, name, value)
        with pytest.raises(ValueError, match=reason):
            msg_to_image(msg)

    refused("shorter than a row", step=width * 3 - 1)
    refused("expected step x height", data=bytes(width * 3 * height - 1))
    refused("expected step x height", data=bytes(width * 3 * height + 1))
    refused("expected step x height", step=width * 3 + 4)               # padding announced, not sent
    refused("empty", height=0, width=0, step=0, data=b"")
    refused("empty", data=b"", step=0)
    refused("shorter than a row", encoding="rgba8")                      # rgb8 rows read as rgba8


def test_undecodable_compressed_images_are_refused(rng):
    for format_string, data, reason in (("jpeg", b"", "empty"), ("jpeg", rng.bytes(500), "could not decode"),
                                        ("png", b"\x89PNG\r\n\x1a\n" + rng.bytes(100), "could not decode"),
                                        ("h264", rng.bytes(100), "names no codec")):
        msg = CompressedImage(format=format_string)
        msg.data = data
        with pytest.raises(ValueError, match=reason):
            msg_to_image(msg)


def test_random_messages_give_an_image_or_a_value_error(rng):
    """Fuzz: layout fields drawn independently of the data; never any other exception."""
    encodings = list(SUPPORTED_ENCODINGS) + ["16UC1", "bayer_rggb8", "yuv422"]
    outcomes = {"image": 0, "refused": 0}
    for _ in range(300):
        encoding = encodings[int(rng.integers(len(encodings)))]
        height, width = (int(v) for v in rng.integers(0, 12, 2))
        row = width * PIXEL_BYTES.get(encoding, 2)
        step = max(0, row + int(rng.integers(-3, 4)))
        size = max(0, step * height + int(rng.choice([0, 0, -1, 1, -step])))
        msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=int(rng.integers(2)))
        msg.data = rng.bytes(size)
        try:
            image = msg_to_image(msg)
        except ValueError:
            outcomes["refused"] += 1
            continue
        outcomes["image"] += 1
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
    for _ in range(100):
        msg = CompressedImage(format=str(rng.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8"])))
        msg.data = rng.bytes(int(rng.integers(0, 300)))
        try:
            msg_to_image(msg)
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["image"] > 0 and outcomes["refused"] > 0, outcomes


def test_rosbags_messages_decode_like_rclpy_ones(rng):
    """The bag analysis reads camera frames as rosbags messages (numpy data): same decoding."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.LATEST)
    rclpy_msg = raw_msg(random_rgb(rng)[..., ::-1], "bgr8", padding=5, rng=rng)
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    bag_msg = store.types["sensor_msgs/msg/Image"](
        header=Header(stamp=Time(sec=0, nanosec=0), frame_id=""), height=rclpy_msg.height, width=rclpy_msg.width,
        encoding=rclpy_msg.encoding, is_bigendian=0, step=rclpy_msg.step,
        data=np.frombuffer(bytes(rclpy_msg.data), dtype=np.uint8))
    np.testing.assert_array_equal(msg_to_image(bag_msg), msg_to_image(rclpy_msg))


class _Logger:
    def __init__(self):
        self.lines = []

    def warning(self, message):
        self.lines.append(("warning", message))

    def error(self, message):
        self.lines.append(("error", message))


def test_bad_messages_are_logged_rate_limited_per_kind(monkeypatch):
    """The same problem at camera rate logs once per period (with the count of the others); a
    different problem is logged at once."""
    from spec_vla_ros.ros import lifecycle

    now = [100.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: now[0])
    logger = _Logger()
    report = lifecycle.RateLimitedLog(logger, period_s=5.0)
    for index in range(30):                                   # one second of a 30 Hz camera
        report("warning", f"ignoring camera frame: image data has {index} bytes")
        now[0] += 1 / 30
    report("warning", "ignoring camera frame: image encoding '16UC1' is not supported")
    assert [text for _, text in logger.lines] == ["ignoring camera frame: image data has 0 bytes",
                                                  "ignoring camera frame: image encoding '16UC1' is not supported"]
    now[0] += 5.0
    report("warning", "ignoring camera frame: image data has 7 bytes")
    assert logger.lines[-1][1] == "ignoring camera frame: image data has 7 bytes (29 more like it in the last 5 s)"


def test_no_exception_leaves_a_guarded_callback():
    """Whatever a callback raises is counted and logged, never propagated to the executor."""
    from spec_vla_ros.ros.policy_node import PolicyNode

    class Node:
        counts = {"inputs_rejected": 0}
        report = staticmethod(lambda level, message: Node.reports.append((level, message)))
        reports = []

        def _count(self, name):
            self.counts[name] += 1

    def broken(_msg):
        raise AttributeError("'numpy.ndarray' object has no attribute 'newbyteorder'\nsecond line")

    node = Node()
    for error_type in (AttributeError, KeyError, RuntimeError, MemoryError):
        def callback(_msg, error_type=error_type):
            raise error_type("boom")
        assert PolicyNode._guarded(node, callback, "camera frame")(object()) is None
    PolicyNode._guarded(node, broken, "camera frame")(object())
    assert node.counts["inputs_rejected"] == 5
    assert all(level == "error" and "\n" not in message and message.startswith("ignored a camera frame: ")
               for level, message in Node.reports)
    PolicyNode._guarded(node, broken, "camera check", count=False)(object())
    assert node.counts["inputs_rejected"] == 5
