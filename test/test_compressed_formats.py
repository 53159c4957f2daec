"""CompressedImage `format` strings as image_transport's compressed publisher writes them:
"<source encoding>; <codec> compressed <target encoding>". The target decides the channel order of
the compressed buffer, so the same picture must become the same RGB array (and so the same action)
whichever target it was sent with, and equal the raw rgb8 frame of the same pixels; a Bayer camera
is demosaiced (png) or refused (jpeg), never acted on as a grey mosaic.

Frames are made here the way image_transport makes them: the buffer handed to OpenCV's imencode
is in the target's channel order. Fresh random seed per run, printed on failure."""
import os

import numpy as np
import pytest

pytest.importorskip("sensor_msgs", reason="ROS 2 message packages are not installed")

import cv2  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from spec_vla_ros.ros.conversions import (BAYER_TO_RGB, image_to_msg, msg_to_image,  # noqa: E402
                                          parse_compressed_format)

SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture
def rng(request):
    print(f"seed {SEED}")
    return np.random.default_rng([SEED, len(request.node.name)])


def compressed(buffer: np.ndarray, format_string: str, codec: str = "png") -> CompressedImage:
    """What image_transport publishes: `buffer` (already in the target's channel order) encoded."""
    ok, encoded = cv2.imencode(".png" if codec == "png" else ".jpg", np.ascontiguousarray(buffer))
    assert ok
    msg = CompressedImage(format=format_string)
    msg.data = encoded.tobytes()
    return msg


def smooth_rgb(rng, height=48, width=64) -> np.ndarray:
    """A picture without pixel-level detail (demosaicing can restore it closely)."""
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The one-channel Bayer image a camera with `pattern` ('rggb', ...) records of `rgb`."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    for index, letter in enumerate(pattern):
        row, column = divmod(index, 2)
        out[row::2, column::2] = rgb[row::2, column::2, channel[letter]]
    return out


@pytest.mark.parametrize("source", ["rgb8", "bgr8"])
def test_the_target_decides_the_channel_order_and_matches_the_raw_frame(rng, source):
    rgb = rng.integers(0, 256, (int(rng.integers(16, 64)), int(rng.integers(16, 64)), 3), dtype=np.uint8)
    raw = msg_to_image(image_to_msg(rgb))
    as_bgr = msg_to_image(compressed(rgb[..., ::-1], f"{source}; png compressed bgr8"))
    as_rgb = msg_to_image(compressed(rgb, f"{source}; png compressed rgb8"))
    bare = msg_to_image(compressed(rgb[..., ::-1], "png"))          # bare png: OpenCV's BGR, today's meaning
    np.testing.assert_array_equal(raw, rgb)
    np.testing.assert_array_equal(as_bgr, rgb)
    np.testing.assert_array_equal(as_rgb, rgb)
    np.testing.assert_array_equal(bare, rgb)


def test_sixteen_bit_and_grey_targets(rng):
    rgb16 = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    from_bgr16 = msg_to_image(compressed(rgb16[..., ::-1], "rgb16; png compressed bgr16"))
    from_rgb16 = msg_to_image(compressed(rgb16, "rgb16; png compressed rgb16"))
    np.testing.assert_array_equal(from_bgr16, from_rgb16)
    raw16 = Image(height=20, width=30, encoding="rgb16", is_bigendian=0, step=30 * 6)
    raw16.data = rgb16.astype("<u2").tobytes()
    np.testing.assert_array_equal(from_rgb16, msg_to_image(raw16))     # 16 -> 8 bits as the raw path does
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    for format_string in ("mono8; png compressed mono8", "mono8; png compressed "):
        np.testing.assert_array_equal(msg_to_image(compressed(grey, format_string)), np.repeat(grey[..., None], 3, 2))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_a_bayer_camera_through_png_is_demosaiced_not_grey(rng, pattern):
    rgb = smooth_rgb(rng)
    image = msg_to_image(compressed(mosaic(rgb, pattern), f"bayer_{pattern}8; png compressed "))
    assert image.shape == rgb.shape
    inner = (slice(4, -4), slice(4, -4))                       # demosaicing guesses at the borders
    error = np.abs(image[inner].astype(int) - rgb[inner].astype(int)).mean()
    assert error < 6, f"mean error {error:.1f} grey levels: the pattern is read wrongly"
    assert not np.array_equal(image[..., 0], image[..., 2])   # colour, not a replicated grey mosaic


def test_a_wrong_bayer_pattern_would_be_noticed(rng):
    """The demosaicing table is not a tautology: reading rggb as bggr swaps red and blue."""
    rgb = smooth_rgb(rng)
    rgb[..., 0], rgb[..., 2] = 220, 30                          # clearly red, not blue
    right = msg_to_image(compressed(mosaic(rgb, "rggb"), "bayer_rggb8; png compressed "))
    wrong = msg_to_image(compressed(mosaic(rgb, "rggb"), "bayer_bggr8; png compressed "))
    assert right[8:-8, 8:-8, 0].mean() > 180 and wrong[8:-8, 8:-8, 0].mean() < 80
    assert set(BAYER_TO_RGB) == {f"bayer_{p}8" for p in ("rggb", "bggr", "gbrg", "grbg")}


@pytest.mark.parametrize("format_string, words", [
    ("bayer_rggb8; jpeg compressed ", "lossy jpeg"),
    ("yuv422; jpeg compressed bgr8", "source encoding 'yuv422'"),
    ("rgb8; png compressed 16UC1", "target encoding '16UC1'"),
    ("16UC1; compressedDepth png", "depth image"),
    ("rgb8; tiff compressed bgr8", "names no codec"),
])
def test_formats_that_cannot_be_acted_on_are_refused_with_one_line(format_string, words):
    with pytest.raises(ValueError) as caught:
        parse_compressed_format(format_string)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_target_that_contradicts_the_data_is_refused(rng):
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    with pytest.raises(ValueError, match="says bgr8.*1 channel"):
        msg_to_image(compressed(grey, "rgb8; png compressed bgr8"))


def test_format_parts():
    parsed = parse_compressed_format("rgb8; jpeg compressed bgr8")
    assert (parsed.source, parsed.codec, parsed.target) == ("rgb8", "jpeg", "bgr8")
    assert parse_compressed_format("JPEG") == parse_compressed_format("jpg") == \
        type(parsed)(source="", codec="jpeg", target="")
    assert parse_compressed_format("bayer_gbrg8; png compressed ").target == ""
