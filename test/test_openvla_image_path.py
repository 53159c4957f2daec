"""The image path against OpenVLA's LIBERO harness (TensorFlow) and its image processor.

Reference vectors: ../shared/testdata/openvla_libero_preprocess.npz, made with TensorFlow by
OpenVLA's own `resize_image` / `crop_and_resize` on LIBERO-GOAL frames. The other tests
transcribe TensorFlow's kernels (scale_and_translate_op.cc, crop_and_resize_op.cc) pixel by
pixel and compare on fresh random sizes.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spec_vla_ros.vla.checkpoint import CheckpointError, load_image_normalization
from spec_vla_ros.vla.constants import DINO_MEAN, DINO_STD, IMAGE_SIZE, OPENVLA_DINO_MEAN, OPENVLA_DINO_STD
from spec_vla_ros.vla.preprocess import (OPENVLA_NORMALIZATION, center_crop_and_resize, lanczos3_taps,
                                         openvla_preprocessor_config, pixel_values, resize_and_crop)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "openvla_libero_preprocess.npz"


def fresh_rng():
    seed = int.from_bytes(os.urandom(4), "little")
    return seed, np.random.default_rng(seed)


def test_libero_frames_are_tensorflows_exactly():
    """The README's claim: identical images (max 0, mean 0 grey levels), with and without the crop."""
    if not REFERENCE.exists():
        pytest.skip(f"reference vectors not found at {REFERENCE} (shared/ beside the clone)")
    reference = np.load(REFERENCE)
    names = sorted({key.split(".")[0] for key in reference.files})
    assert names
    for name in names:
        for center_crop, key in ((False, "resized_224"), (True, "center_cropped_224")):
            ours = resize_and_crop(reference[f"{name}.input_256"], center_crop)
            assert ours.dtype == reference[f"{name}.{key}"].dtype == np.uint8
            np.testing.assert_array_equal(ours, reference[f"{name}.{key}"], err_msg=f"{name} {key}")


# --- TensorFlow's kernels, transcribed one pixel at a time ----------------------------------------

def tf_lanczos3(x):
    f32, pi = np.float32, np.float32(3.14159265359)
    x = abs(x)
    if x > 3:
        return f32(0)
    if x <= 1e-3:
        return f32(1)
    return f32(3) * np.sin(pi * x) * np.sin(pi * x / f32(3)) / (pi * pi * x * x)


def tf_scale_and_translate_weights(in_size, out_size):
    """ComputeSpansCore (lanczos3, antialias, translate 0) as a dense [out, in] matrix."""
    f32 = np.float32
    inv_scale = f32(1.0 / float(f32(out_size) / f32(in_size)))
    kernel_scale = max(inv_scale, f32(1))
    weights = np.zeros((out_size, in_size), np.float32)
    for x in range(out_size):
        sample = (f32(x) + f32(0.5)) * inv_scale
        start = min(max(math.ceil(sample - f32(3) * kernel_scale - f32(0.5)), 0), in_size - 1)
        end = min(max(math.floor(sample + f32(3) * kernel_scale - f32(0.5)), 0), in_size - 1) + 1
        taps = [tf_lanczos3((f32(s) + f32(0.5) - sample) * (f32(1) / kernel_scale)) for s in range(start, end)]
        total = f32(0)
        for tap in taps:
            total = f32(total + tap)
        weights[x, start:end] = [f32(tap * (f32(1) / total)) for tap in taps]
    return weights


def test_lanczos3_weights_are_tensorflows():
    seed, rng = fresh_rng()
    for in_size, out_size in [(256, 224), (480, 224), (640, 224), (64, 224), (16, 224)] + \
            [tuple(int(v) for v in rng.integers(16, 700, 2)) for _ in range(3)]:
        sources, weights = lanczos3_taps(in_size, out_size)
        dense = torch.zeros(out_size, in_size)
        for tap_sources, tap_weights in zip(sources, weights):
            dense[torch.arange(out_size), tap_sources] += tap_weights
        expected = tf_scale_and_translate_weights(in_size, out_size)
        np.testing.assert_array_equal(dense.numpy(), expected, err_msg=f"{in_size} -> {out_size}, seed {seed}")
        np.testing.assert_allclose(dense.sum(1).numpy(), 1, atol=1e-5, err_msg=f"seed {seed}")


def tf_crop_and_resize(image, size):
    """crop_and_resize_op.cc (bilinear) for OpenVLA's centered box of area 0.9; image [H, W, C] float32."""
    f32 = np.float32
    side = np.clip(np.sqrt(f32(0.9)), f32(0), f32(1))
    y1 = x1 = (f32(1) - side) / f32(2)
    y2 = x2 = y1 + side
    height, width = image.shape[:2]
    height_scale = (y2 - y1) * f32(height - 1) / f32(size - 1)
    width_scale = (x2 - x1) * f32(width - 1) / f32(size - 1)
    out = np.zeros((size, size, image.shape[2]), np.float32)
    for y in range(size):
        in_y = y1 * f32(height - 1) + f32(y) * height_scale
        top, bottom = math.floor(in_y), math.ceil(in_y)
        y_lerp = in_y - f32(top)
        for x in range(size):
            in_x = x1 * f32(width - 1) + f32(x) * width_scale
            left, right = math.floor(in_x), math.ceil(in_x)
            x_lerp = in_x - f32(left)
            upper = image[top, left] + (image[top, right] - image[top, left]) * x_lerp
            lower = image[bottom, left] + (image[bottom, right] - image[bottom, left]) * x_lerp
            out[y, x] = upper + (lower - upper) * y_lerp
    return out


def test_center_crop_is_tensorflows_crop_and_resize():
    seed, rng = fresh_rng()
    for _ in range(3):
        height, width, size = (int(v) for v in rng.integers(16, 80, 3))
        image = rng.random((height, width, 3), dtype=np.float32)
        ours = center_crop_and_resize(torch.from_numpy(image).permute(2, 0, 1), size).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, tf_crop_and_resize(image, size), err_msg=f"seed {seed}")


def test_any_camera_size_gives_openvla_pixel_values():
    seed, rng = fresh_rng()
    for height, width in ((480, 640), (16, 16), tuple(int(v) for v in rng.integers(16, 500, 2))):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for center_crop in (True, False):
            values = pixel_values(image, center_crop)
            assert values.shape == (6, IMAGE_SIZE, IMAGE_SIZE) and values.dtype == torch.float32, f"seed {seed}"
            assert torch.isfinite(values).all(), f"seed {seed}"
    flat = np.full((300, 200, 3), int(rng.integers(0, 256)), dtype=np.uint8)
    harness = resize_and_crop(flat)             # normalized weights: a flat image stays flat
    assert (harness == harness[0, 0]).all() and abs(int(harness[0, 0, 0]) - int(flat[0, 0, 0])) <= 1, f"seed {seed}"


# --- normalization from preprocessor_config.json ------------------------------------------------

UNUSUAL = {"mean": [[0.11, 0.93, 0.27], [0.61, 0.05, 0.44]], "std": [[0.031, 1.7, 0.5], [2.5, 0.09, 0.77]]}


def write_preprocessor_config(directory, config):
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    return directory


def test_preprocessor_config_normalization_is_applied_exactly(tmp_path):
    config = openvla_preprocessor_config(OPENVLA_NORMALIZATION)
    config["tvf_normalize_params"] = [{"inplace": False, "mean": m, "std": s}
                                      for m, s in zip(UNUSUAL["mean"], UNUSUAL["std"])]
    normalization = load_image_normalization(write_preprocessor_config(tmp_path, config))
    seed, rng = fresh_rng()
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for center_crop in (True, False):
        x = torch.from_numpy(resize_and_crop(image, center_crop)).permute(2, 0, 1).double()
        mean = torch.tensor(UNUSUAL["mean"][0] + UNUSUAL["mean"][1], dtype=torch.float64).view(6, 1, 1)
        std = torch.tensor(UNUSUAL["std"][0] + UNUSUAL["std"][1], dtype=torch.float64).view(6, 1, 1)
        expected = (torch.cat([x, x]) / 255 - mean) / std                    # OpenVLA's formula, float64
        ours = pixel_values(image, center_crop, normalization)
        torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-6, msg=f"seed {seed}")
        assert not torch.allclose(ours, pixel_values(image, center_crop)), "the default must differ"


def test_tvf_normalize_params_win_over_means_and_stds(tmp_path):
    """PrismaticImageProcessor builds from means/stds, then its saved tvf_normalize_params overwrite them."""
    config = openvla_preprocessor_config(OPENVLA_NORMALIZATION)
    config["means"], config["stds"] = UNUSUAL["mean"], UNUSUAL["std"]
    normalization = load_image_normalization(write_preprocessor_config(tmp_path, config))
    assert normalization.mean[:3] == OPENVLA_DINO_MEAN and normalization.std[:3] == OPENVLA_DINO_STD
    del config["tvf_normalize_params"]
    normalization = load_image_normalization(write_preprocessor_config(tmp_path, config))
    assert normalization.mean == tuple(UNUSUAL["mean"][0] + UNUSUAL["mean"][1])
    assert normalization.std == tuple(UNUSUAL["std"][0] + UNUSUAL["std"][1])


def test_published_values_are_imagenet_rounded_to_bfloat16():
    for exact, published in ((DINO_MEAN, OPENVLA_DINO_MEAN), (DINO_STD, OPENVLA_DINO_STD)):
        assert torch.tensor(exact).bfloat16().float().tolist() == list(published)


def test_without_preprocessor_config_the_published_values_are_used(tmp_path):
    normalization = load_image_normalization(tmp_path)
    assert normalization.mean == OPENVLA_NORMALIZATION.mean and normalization.std == OPENVLA_NORMALIZATION.std
    assert "no preprocessor_config.json" in normalization.source


@pytest.mark.parametrize("edit, message", [
    (lambda c: [c.pop(key) for key in ("tvf_normalize_params", "means")], "neither tvf_normalize_params nor means"),
    (lambda c: c.update(tvf_normalize_params=[{"mean": [0.5] * 3}] * 2), "list of {'mean', 'std'} objects"),
    (lambda c: c.update(tvf_normalize_params=c["tvf_normalize_params"][:1]), "two backbones"),
    (lambda c: c.update(tvf_normalize_params=[{"mean": [0.5] * 3, "std": [0.0] * 3}] * 2), "std must be positive"),
    (lambda c: c.update(tvf_normalize_params=[{"mean": [float("nan")] * 3, "std": [1] * 3}] * 2), "finite"),
    (lambda c: c.update(input_sizes=[[3, 336, 336]] * 2), "not 224 x 224"),
])
def test_bad_preprocessor_configs_are_named(tmp_path, edit, message):
    config = openvla_preprocessor_config(OPENVLA_NORMALIZATION)
    edit(config)
    with pytest.raises(CheckpointError, match=message):
        load_image_normalization(write_preprocessor_config(tmp_path, config))
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_image_normalization(tmp_path)
