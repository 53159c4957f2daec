"""Conversions between ROS 2 messages and the numpy arrays the core works on.

Camera images arrive as `sensor_msgs/Image` (raw) or `sensor_msgs/CompressedImage` (the
`<camera>/compressed` topic of image_transport). Both become an HxWx3 uint8 RGB array:

- raw: decoded by the message's own layout fields. `encoding` picks the pixel layout (one of
  SUPPORTED_ENCODINGS), `step` the row length in bytes: rows padded beyond width x pixel size are
  cut before conversion; `data` must hold exactly step x height bytes; `is_bigendian` gives the
  byte order of 16-bit samples. The conversion itself (byte order, channel order, alpha dropped,
  grey replicated, 16-bit samples scaled to 8 bits by x 255/65535, truncated) is rosbags-image's
  `image_to_cvimage`, a maintained converter that reads rclpy messages and rosbags messages alike,
  so the node and the bag analysis share one path on ROS and pip-only machines.
- compressed: the `format` string as image_transport's compressed publisher writes it,
  "<source encoding>; <codec> compressed <target encoding>" ("rgb8; jpeg compressed bgr8",
  "mono8; png compressed mono8"), or a bare "jpeg" / "png". The target decides the channel order
  of the decoded buffer exactly as image_transport's subscriber reads it (bgr* or none: OpenCV's
  BGR; rgb*: already RGB), so the same picture gives the same array whichever way it was sent; a
  Bayer camera's mosaic (png) is demosaiced with OpenCV, a lossy jpeg one refused; bare jpeg/png
  are OpenCV's BGR. The data is decoded with OpenCV's `imdecode` (what rosbags-image uses, called
  directly because its helper asserts on undecodable data and cannot turn a grey image into RGB).

Every problem with a message is a ValueError whose one-line text names what was wrong and what
was expected; nothing else escapes from here for a message's content.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
from rosbags.image import ImageError, image_to_cvimage
from sensor_msgs.msg import CompressedImage, Image

from ..vla.action_tokenizer import validate_action
from ..vla.constants import ACTION_DIM, ACTION_NAMES

# encoding -> bytes per pixel. Colour and grey only: depth (16UC1, 32FC1), Bayer and YUV images
# are not what a VLA was trained on and are refused.
PIXEL_BYTES = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1,
               "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8, "mono16": 2}
SUPPORTED_ENCODINGS = tuple(PIXEL_BYTES)
COMPRESSED_CODECS = ("jpeg", "png")
# A Bayer camera's mosaic (ROS encoding) -> OpenCV's demosaicing to RGB. OpenCV names a pattern by
# its second row's first two pixels, ROS by the first row's: ROS rggb is OpenCV's BG.
BAYER_TO_RGB = {"bayer_rggb8": cv2.COLOR_BayerBG2RGB, "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
                "bayer_gbrg8": cv2.COLOR_BayerGR2RGB, "bayer_grbg8": cv2.COLOR_BayerGB2RGB}
COMPRESSED_SUFFIX = "compressed"          # image_transport: <base topic>/compressed
JPEG_QUALITY = 95


@dataclass(frozen=True)
class CompressedFormat:
    """What a CompressedImage's `format` says: the camera's encoding ('' when not given), the codec
    (jpeg or png) and the channel order of the buffer that was compressed ('' when not given)."""
    source: str
    codec: str
    target: str


def image_to_msg(rgb: np.ndarray, stamp=None, frame_id: str = "") -> Image:
    """HxWx3 uint8 RGB array -> sensor_msgs/Image (rgb8, unpadded rows, little-endian flag 0)."""
    _check_rgb(rgb)
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.data = _byte_array(rgb)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def image_to_compressed_msg(rgb: np.ndarray, codec: str = "jpeg", stamp=None, frame_id: str = "",
                            quality: int = JPEG_QUALITY) -> CompressedImage:
    """HxWx3 uint8 RGB array -> sensor_msgs/CompressedImage as image_transport's compressed
    publisher writes it from an rgb8 image (format "rgb8; jpeg compressed bgr8"); codec jpeg or png."""
    _check_rgb(rgb)
    if codec not in COMPRESSED_CODECS:
        raise ValueError(f"codec '{codec}' is not supported; expected one of {COMPRESSED_CODECS}")
    options = [cv2.IMWRITE_JPEG_QUALITY, quality] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if codec == "jpeg" else ".png", np.ascontiguousarray(rgb[..., ::-1]), options)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape[1]} x {rgb.shape[0]} image as {codec}")
    msg = CompressedImage(format=f"rgb8; {codec} compressed bgr8")
    msg.data = _byte_array(encoded)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def msg_to_image(msg, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage (rclpy or rosbags message) -> HxWx3 uint8 RGB array.

    `expected_size` (width, height), if given, is checked. ValueError names what is wrong."""
    image = _compressed_to_rgb(msg) if hasattr(msg, "format") else _raw_to_rgb(msg)
    if expected_size is not None and (image.shape[1], image.shape[0]) != tuple(expected_size):
        raise ValueError(f"image is {image.shape[1]} x {image.shape[0]}, "
                         f"expected {expected_size[0]} x {expected_size[1]}")
    return image


def _raw_to_rgb(msg) -> np.ndarray:
    encoding, height, width, step = msg.encoding, msg.height, msg.width, msg.step
    if encoding not in PIXEL_BYTES:
        raise ValueError(f"image encoding '{encoding}' is not supported; expected one of "
                         f"{', '.join(SUPPORTED_ENCODINGS)}")
    if height == 0 or width == 0 or len(msg.data) == 0:
        raise ValueError(f"image is empty ({width} x {height}, {len(msg.data)} bytes)")
    row_bytes = width * PIXEL_BYTES[encoding]
    if step < row_bytes:
        raise ValueError(f"image step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    if len(msg.data) != step * height:
        raise ValueError(f"image data has {len(msg.data)} bytes, expected step x height = {step} x {height} = "
                         f"{step * height} for {width} x {height} {encoding}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]   # padding cut
    unpadded = SimpleNamespace(encoding=encoding, height=height, width=width, step=row_bytes,
                               is_bigendian=bool(msg.is_bigendian), data=np.ascontiguousarray(rows))
    return _to_rgb8(unpadded, encoding)


def parse_compressed_format(format_string: str) -> CompressedFormat:
    """A CompressedImage `format` -> CompressedFormat; ValueError (one line) for what cannot be read.

    image_transport's compressed publisher writes "<source encoding>; <codec> compressed <target>":
    the source is the camera's encoding, the target the channel order of the buffer that was
    compressed (colour sources are converted to bgr8 / bgr16 first; grey and Bayer sources are
    compressed as they are, with an empty target). Its subscriber undoes the same way: a `bgr`
    target means the decoded buffer is BGR, an `rgb` target that it is already RGB. A bare "jpeg"
    or "png" (no source, no target) is OpenCV's convention, BGR. compressedDepth is refused."""
    text = format_string.strip()
    lowered = text.lower()
    if "compresseddepth" in lowered.replace(" ", ""):
        raise ValueError(f"compressed image format '{format_string}' is a depth image; expected a colour or "
                         f"grey image compressed as {' or '.join(COMPRESSED_CODECS)}")
    source, separator, rest = text.partition(";")
    if not separator:                                  # bare "jpeg" / "png"
        source, rest = "", text
    words = rest.split()
    codecs = [word.lower() for word in words if word.lower() in COMPRESSED_CODECS or word.lower() == "jpg"]
    if len(codecs) != 1 or (separator and "compressed" not in words):
        raise ValueError(f"compressed image format '{format_string}' names no codec; expected jpeg or png, as "
                         f"image_transport writes it ('rgb8; jpeg compressed bgr8') or plain 'jpeg' / 'png'")
    codec = "jpeg" if codecs[0] == "jpg" else codecs[0]
    target = words[-1] if words[-1] != "compressed" and words[-1].lower() != codecs[0] else ""
    source = source.strip()
    if source and source not in PIXEL_BYTES and source not in BAYER_TO_RGB:
        raise ValueError(f"compressed image source encoding '{source}' is not supported; expected one of "
                         f"{', '.join(SUPPORTED_ENCODINGS)} or a bayer_*8 camera")
    if target and target not in PIXEL_BYTES:
        raise ValueError(f"compressed image target encoding '{target}' in '{format_string}' is not supported; "
                         f"expected one of {', '.join(SUPPORTED_ENCODINGS)} (or none)")
    if source in BAYER_TO_RGB and codec == "jpeg":
        raise ValueError(f"compressed image format '{format_string}': a Bayer mosaic compressed as lossy jpeg "
                         f"cannot be demosaiced faithfully; publish the debayered image (image_proc) or use png")
    return CompressedFormat(source=source, codec=codec, target=target)


def compressed_codec(format_string: str) -> str:
    """'jpeg' or 'png' from a CompressedImage format string; ValueError for anything else."""
    return parse_compressed_format(format_string).codec


def _compressed_to_rgb(msg) -> np.ndarray:
    compressed = parse_compressed_format(msg.format)
    codec = compressed.codec
    if len(msg.data) == 0:
        raise ValueError(f"compressed image is empty (format '{msg.format}', 0 bytes)")
    # Unchanged: grey stays grey, 16-bit PNG stays 16-bit, alpha is kept (dropped below).
    decoded = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype not in (np.uint8, np.uint16) or decoded.size == 0:
        raise ValueError(f"could not decode {len(msg.data)} bytes as a {codec} image (format '{msg.format}')")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if compressed.source in BAYER_TO_RGB:
        if channels != 1 or decoded.dtype != np.uint8:
            raise ValueError(f"compressed {compressed.source} image decoded to {channels} channel(s) of "
                             f"{decoded.dtype}; expected the one-channel 8-bit mosaic")
        return np.ascontiguousarray(cv2.cvtColor(decoded, BAYER_TO_RGB[compressed.source]))
    layout = {1: "mono", 3: "rgb", 4: "rgba"} if compressed.target.startswith("rgb") else \
        {1: "mono", 3: "bgr", 4: "bgra"}         # a bgr target, a grey one, or bare jpeg/png: OpenCV's BGR(A)
    if channels not in layout:
        raise ValueError(f"decoded {codec} image has {channels} channels; expected 1, 3 or 4")
    expected_channels = PIXEL_BYTES[compressed.target] // (2 if compressed.target.endswith("16") else 1) \
        if compressed.target else None
    if expected_channels is not None and channels != expected_channels:
        raise ValueError(f"compressed image format '{msg.format}' says {compressed.target}, but the {codec} data "
                         f"decoded to {channels} channel(s)")
    encoding = f"{layout[channels]}{8 * decoded.itemsize}"
    height, width = decoded.shape[:2]
    unpacked = SimpleNamespace(encoding=encoding, height=height, width=width, step=width * PIXEL_BYTES[encoding],
                               is_bigendian=False, data=np.ascontiguousarray(decoded).view(np.uint8).reshape(-1))
    return _to_rgb8(unpacked, f"{codec} ({encoding})")


def _to_rgb8(unpadded, described: str) -> np.ndarray:
    """rosbags-image conversion of an unpadded, checked image to HxWx3 uint8 RGB."""
    try:
        rgb = image_to_cvimage(unpadded, "rgb8")
    except (ImageError, cv2.error, TypeError, ValueError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"could not convert a {unpadded.width} x {unpadded.height} {described} image to rgb8: "
                         f"{message}") from error
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _byte_array(values: np.ndarray) -> array:
    """uint8[] field value: an array('B') is taken as is, other sequences are checked item by item (slow)."""
    return array("B", np.ascontiguousarray(values).tobytes())


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {getattr(rgb, 'shape', None)} "
                         f"dtype {getattr(rgb, 'dtype', type(rgb).__name__)}")


def action_to_msg(action: np.ndarray):
    """7-DoF action -> std_msgs/Float64MultiArray with a labelled layout."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=" ".join(ACTION_NAMES), size=ACTION_DIM, stride=ACTION_DIM)]
    msg.data = [float(v) for v in validate_action(action)]
    return msg
