"""Image preprocessing as OpenVLA's LIBERO harness does it, into 6-channel pixel values.

OpenVLA's harness (openvla/openvla: experiments/robot/libero/libero_utils.py `resize_image`,
experiments/robot/openvla_utils.py `get_vla_action` and `crop_and_resize`) and its image
processor (prismatic/extern/hf/processing_prismatic.py), step by step, without TensorFlow:

1. JPEG round trip (any input size): encode at quality 95 with Pillow (libjpeg's default
   integer DCT and 4:2:0 chroma, as `tf.image.encode_jpeg`), decode with libjpeg-turbo's fast
   integer DCT (`simplejpeg`, `fastdct=True`), TensorFlow's default decoder. Bit-exact with
   TensorFlow's round trip.
2. Resize to 224 x 224 as `tf.image.resize(method="lanczos3", antialias=True)` (TensorFlow's
   `scale_and_translate` kernel: separable, rows first, float32), round half to even, clip to
   0..255.
3. With `center_crop`: to float [0, 1] (`x * float32(1/255)`), `tf.image.crop_and_resize`
   (bilinear) of the centered box of side sqrt(0.9) back to 224 x 224, clip to [0, 1], back to
   uint8 as `tf.image.convert_image_dtype(..., saturate=True)`: `floor(clip(x * 255.5, 0, 255))`.
4. The processor's own resize and center crop are no-ops on a 224 x 224 image; it then applies
   `to_tensor` (x / 255) and `normalize` per backbone: DINOv2 with the checkpoint's
   `preprocessor_config.json` values (`ImageNormalization`), SigLIP with 0.5 / 0.5.

Steps 2 and 3 follow TensorFlow's kernels operation by operation in float32 (weights, tap
order, interpolation formula), so on the LIBERO-GOAL reference frames made with TensorFlow
(test/test_openvla_image_path.py) steps 1-3 reproduce its 224 x 224 images bit for bit (the
test allows 1 grey level). Cost on one CPU thread: about 1 ms per 256 x 256 frame more than a
plain PIL resize.
"""
from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
from PIL import Image

from .constants import (CENTER_CROP_AREA, IMAGE_SIZE, JPEG_QUALITY, OPENVLA_DINO_MEAN, OPENVLA_DINO_STD,
                        SIGLIP_MEAN, SIGLIP_STD)

LANCZOS_RADIUS = 3


def validate_image(image) -> np.ndarray:
    """Return `image` as an HxWx3 uint8 array, or raise ValueError saying what was expected."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array of shape (H, W, 3) and dtype uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (RGB), got {image.shape}")
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise ValueError(f"image must be at least 16 x 16 pixels, got {image.shape[1]} x {image.shape[0]}")
    return image


# --- normalization -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageNormalization:
    """`(x / 255 - mean) / std` per channel: 3 DINOv2 channels, then 3 SigLIP channels.

    `source` says where the values came from (a checkpoint's preprocessor_config.json or a
    default); it is reported, never used in arithmetic. Raises ValueError for anything but 6
    finite means and 6 finite positive stds.
    """

    mean: tuple
    std: tuple
    source: str = "default"

    def __post_init__(self):
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 6 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"image normalization {name} must be 6 finite numbers (3 DINOv2, then 3 SigLIP), "
                                 f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise ValueError(f"image normalization std must be positive, got {self.std}")

    @functools.cached_property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 mean and std, shaped [6, 1, 1] for broadcasting over [6, H, W]."""
        return (torch.tensor(self.mean, dtype=torch.float32).view(6, 1, 1),
                torch.tensor(self.std, dtype=torch.float32).view(6, 1, 1))


# The published OpenVLA-7B checkpoints' values: bf16-rounded ImageNet for DINOv2, 0.5 for SigLIP.
OPENVLA_NORMALIZATION = ImageNormalization(OPENVLA_DINO_MEAN + SIGLIP_MEAN, OPENVLA_DINO_STD + SIGLIP_STD,
                                           "OpenVLA-7B checkpoints' preprocessor_config.json (bf16-rounded ImageNet)")


def normalization_from_preprocessor_config(config: dict,
                                           source: str = "preprocessor_config.json") -> ImageNormalization:
    """The normalization OpenVLA's `PrismaticImageProcessor` applies for a `preprocessor_config.json`.

    The processor rebuilds its transforms from `means` / `stds`, then its saved attributes
    overwrite them, so `tvf_normalize_params` (a list of `{"mean", "std", "inplace"}`, one per
    backbone) wins when present. Raises ValueError naming the field when neither is usable,
    when there are not two backbones (DINOv2, SigLIP), or when an input size is not 224 x 224.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
    sizes = config.get("input_sizes")
    if sizes is not None and any(list(size)[-2:] != [IMAGE_SIZE, IMAGE_SIZE] for size in sizes):
        raise ValueError(f"{source}: input_sizes {sizes} are not {IMAGE_SIZE} x {IMAGE_SIZE}, the only size supported")
    if "tvf_normalize_params" in config:
        field, params = "tvf_normalize_params", config["tvf_normalize_params"]
        try:
            means, stds = [p["mean"] for p in params], [p["std"] for p in params]
        except (TypeError, KeyError):
            raise ValueError(f"{source}: tvf_normalize_params must be a list of {{'mean', 'std'}} objects, "
                             f"got {params!r}") from None
    elif "means" in config and "stds" in config:
        field, means, stds = "means/stds", config["means"], config["stds"]
    else:
        raise ValueError(f"{source}: has neither tvf_normalize_params nor means/stds")
    if not (isinstance(means, list) and isinstance(stds, list) and len(means) == len(stds) == 2
            and all(isinstance(v, list) and len(v) == 3 for v in means + stds)):
        raise ValueError(f"{source}: {field} must hold 3 means and 3 stds for each of two backbones (DINOv2, SigLIP), "
                         f"got means {means!r} and stds {stds!r}")
    try:
        return ImageNormalization(tuple(means[0] + means[1]), tuple(stds[0] + stds[1]), f"{source} ({field})")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {field}: {error}") from None


def openvla_preprocessor_config(normalization: ImageNormalization) -> dict:
    """A `preprocessor_config.json` in the layout of the published OpenVLA checkpoints."""
    sizes = [[3, IMAGE_SIZE, IMAGE_SIZE]] * 2
    means, stds = [list(normalization.mean[:3]), list(normalization.mean[3:])], \
        [list(normalization.std[:3]), list(normalization.std[3:])]
    return {
        "image_processor_type": "PrismaticImageProcessor", "processor_class": "PrismaticProcessor",
        "image_resize_strategy": "resize-naive", "use_fused_vision_backbone": True,
        "input_sizes": sizes, "interpolations": ["bicubic", "bicubic"], "means": means, "stds": stds,
        "tvf_crop_params": [{"output_size": [IMAGE_SIZE, IMAGE_SIZE]}] * 2,
        "tvf_do_letterbox": False, "tvf_letterbox_fill": None,
        "tvf_normalize_params": [{"inplace": False, "mean": m, "std": s} for m, s in zip(means, stds)],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None,
                               "size": [IMAGE_SIZE, IMAGE_SIZE]}] * 2,
    }


# --- the harness's image path -----------------------------------------------------------------

def jpeg_round_trip(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> the same after JPEG encode (quality 95) and decode, as TensorFlow does it."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TensorFlow's lanczos3 kernel on float32 distances >= 0, in its float32 operation order."""
    pi, radius = np.float32(3.14159265359), np.float32(LANCZOS_RADIUS)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = radius * np.sin(pi * x) * np.sin(pi * x / radius) / (pi * pi * x * x)
    return np.where(x <= np.float32(1e-3), np.float32(1), np.where(x > radius, np.float32(0), value))


@functools.lru_cache(maxsize=16)
def lanczos3_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Banded resampling matrix of `tf.image.resize(method="lanczos3", antialias=True)` along one axis.

    Returns `(sources, weights)`, both [span, out_size]: output pixel i is the sum over k of
    `weights[k, i] * input[sources[k, i]]`, accumulated in k order. TensorFlow's
    `scale_and_translate` (no translation), in float32 like its kernel: output pixel x samples
    at `(x + 0.5) / scale`; when downscaling the kernel is widened by 1 / scale; taps outside the
    image are dropped and the rest divided by their sum.
    """
    f32 = np.float32
    inv_scale = f32(1.0 / float(f32(out_size) / f32(in_size)))
    kernel_scale = max(inv_scale, f32(1))
    support = f32(LANCZOS_RADIUS) * kernel_scale
    span = min(2 * math.ceil(LANCZOS_RADIUS * float(kernel_scale)) + 1, in_size)
    sample = (np.arange(out_size, dtype=f32) + f32(0.5)) * inv_scale
    start = np.clip(np.ceil(sample - support - f32(0.5)), 0, in_size - 1).astype(np.int64)
    end = np.clip(np.floor(sample + support - f32(0.5)), 0, in_size - 1).astype(np.int64) + 1
    sources = start[None, :] + np.arange(span)[:, None]                      # [span, out]
    used = (sources < end[None, :]) & (sample <= in_size)[None, :]
    distance = np.abs((sources.astype(f32) + f32(0.5) - sample[None, :]) * (f32(1) / kernel_scale))
    weights = np.where(used, _lanczos3(distance), f32(0)).astype(f32)
    total = np.zeros(out_size, dtype=f32)
    for row in weights:                                                        # summed in tap order
        total += row
    usable = np.abs(total) >= f32(1000) * np.finfo(f32).tiny
    weights = np.where(usable[None, :], weights * (f32(1) / np.where(usable, total, f32(1))), f32(0))
    return (torch.from_numpy(np.minimum(sources, in_size - 1)), torch.from_numpy(weights.astype(f32)))


def _resample_rows(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """[C, H, W] -> [C, size, W], lanczos3 along H, accumulated tap by tap as TensorFlow does
    (a product, then a sum, each rounded to float32)."""
    sources, weights = lanczos3_taps(rgb.shape[1], size)
    out = None
    for tap_sources, tap_weights in zip(sources, weights):
        term = rgb.index_select(1, tap_sources).mul_(tap_weights[:, None])
        out = term if out is None else out.add_(term)
    return out


def resize_lanczos3(rgb: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """[3, H, W] float -> [3, size, size] float, unrounded (`tf.image.resize`, lanczos3, antialias):
    rows first, then columns, as TensorFlow's kernel. The result is a transposed view (columns
    contiguous), which `center_crop_and_resize` takes without a copy."""
    rows = _resample_rows(rgb, size)                                           # [3, size, W]
    return _resample_rows(rows.transpose(1, 2).contiguous(), size).transpose(1, 2)


@functools.lru_cache(maxsize=8)
def _crop_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`tf.image.crop_and_resize` (bilinear) along one axis for the centered box of area 0.9.

    The box is `[o, o + s]` in normalized coordinates with `s = sqrt(0.9)` and `o = (1 - s) / 2`
    (float32, as OpenVLA builds it); output pixel y reads source position
    `o * (in - 1) + y * s * (in - 1) / (out - 1)`. Returns the low and high source indices and
    the interpolation weight of the high one.
    """
    side = np.clip(np.sqrt(np.float32(CENTER_CROP_AREA)), np.float32(0), np.float32(1))
    begin = (np.float32(1) - side) / np.float32(2)
    end = begin + side
    step = (end - begin) * np.float32(in_size - 1) / np.float32(out_size - 1)
    position = begin * np.float32(in_size - 1) + np.arange(out_size, dtype=np.float32) * step
    low, high = np.floor(position), np.ceil(position)
    return (torch.from_numpy(low.astype(np.int64)), torch.from_numpy(high.astype(np.int64)),
            torch.from_numpy((position - low).astype(np.float32)))


def center_crop_and_resize(unit: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """[3, H, W] float in [0, 1] -> [3, size, size]: the centered 0.9-area box, bilinear, as TensorFlow:
    `top = top_left + (top_right - top_left) * x_lerp`, the same for bottom, then
    `top + (bottom - top) * y_lerp` (float32). Gathers run along rows only (fast), so the
    horizontal step works on the transposed image."""
    top, bottom, y_lerp = _crop_taps(unit.shape[1], size)
    left, right, x_lerp = _crop_taps(unit.shape[2], size)
    columns = unit.transpose(1, 2).contiguous()                               # [3, W, H]
    left_columns = columns.index_select(1, left)
    across = left_columns.add_((columns.index_select(1, right) - left_columns).mul_(x_lerp[:, None]))
    rows = across.transpose(1, 2).contiguous()                                 # [3, H, size]
    upper = rows.index_select(1, top)
    return upper.add_((rows.index_select(1, bottom) - upper).mul_(y_lerp[:, None]))


_ONE_OVER_255 = torch.tensor(1.0 / 255.0, dtype=torch.float32)   # convert_image_dtype's scale, in float32


def harness_rgb(image: np.ndarray, center_crop: bool = True) -> torch.Tensor:
    """HxWx3 uint8 -> [3, 224, 224] float32 holding integers 0..255: the image OpenVLA's harness
    hands to its processor (steps 1-3 of the module docstring)."""
    decoded = jpeg_round_trip(validate_image(image))
    rgb = torch.from_numpy(decoded).permute(2, 0, 1).float().contiguous()
    rgb = resize_lanczos3(rgb).round_().clamp_(0, 255)
    if center_crop:
        cropped = center_crop_and_resize(rgb * _ONE_OVER_255).clamp_(0, 1)
        rgb = (cropped * 255.5).clamp_(0, 255).floor_()
    return rgb


def resize_and_crop(image: np.ndarray, center_crop: bool = True) -> np.ndarray:
    """HxWx3 uint8 -> 224x224x3 uint8, the harness's image (see `harness_rgb`)."""
    return np.ascontiguousarray(harness_rgb(image, center_crop).permute(1, 2, 0).to(torch.uint8).numpy())


def pixel_values(image: np.ndarray, center_crop: bool = True,
                 normalization: ImageNormalization = OPENVLA_NORMALIZATION) -> torch.Tensor:
    """HxWx3 uint8 RGB -> float32 tensor [6, 224, 224] (DINOv2 channels, then SigLIP channels).

    Pass the verifier's `image_normalization` (from its checkpoint); the default is the
    published OpenVLA-7B checkpoints' values. Raises ValueError for a malformed image.
    """
    unit = harness_rgb(image, center_crop).div_(255)       # torchvision's to_tensor
    mean, std = normalization.tensors
    out = torch.empty(6, IMAGE_SIZE, IMAGE_SIZE)
    for half in (slice(0, 3), slice(3, 6)):                 # torchvision's normalize, written in place
        torch.sub(unit, mean[half], out=out[half]).div_(std[half])
    return out
