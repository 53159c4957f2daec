"""VLAPolicy: the whole (image, instruction) -> action path, and its input validation."""
import numpy as np
import pytest

from spec_vla_ros.policy import PolicyConfig, VLAPolicy, validate_config
from spec_vla_ros.vla.action_tokenizer import LIBERO_GOAL_STATS, token_ids_to_actions


@pytest.fixture(scope="module")
def policy():
    return VLAPolicy(PolicyConfig(draft="none"))


def test_act_returns_a_denormalized_action_from_the_decoded_tokens(policy, rng):
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    action, stats = policy.act(image, "put the bowl on the plate")
    assert action.shape == (7,) and action.dtype == np.float64 and np.all(np.isfinite(action))
    np.testing.assert_allclose(action, LIBERO_GOAL_STATS.unnormalize(token_ids_to_actions(stats.tokens)))
    assert stats.draft == "none" and stats.verifier_passes == 7 and stats.total_ms > 0
    again, _ = policy.act(image, "put the bowl on the plate")
    np.testing.assert_array_equal(action, again)


def test_pixel_values_normalize_the_resized_crop_for_both_backbones(rng):
    """torchvision's to_tensor + normalize (what OpenVLA's image transforms do) on our resized crop."""
    import torch
    from torchvision.transforms.functional import normalize, to_tensor

    from spec_vla_ros.vla.constants import DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD
    from spec_vla_ros.vla.preprocess import pixel_values, resize_and_crop
    for center_crop in (True, False):
        image = rng.integers(0, 256, (256, 200, 3), dtype=np.uint8)
        resized = to_tensor(resize_and_crop(image, center_crop))
        expected = torch.cat([normalize(resized, DINO_MEAN, DINO_STD), normalize(resized, SIGLIP_MEAN, SIGLIP_STD)])
        torch.testing.assert_close(pixel_values(image, center_crop), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("image, message", [
    (np.zeros((224, 224, 3), dtype=np.float32), "dtype uint8"),
    (np.zeros((224, 224), dtype=np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((224, 224, 4), dtype=np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((4, 4, 3), dtype=np.uint8), "at least 16 x 16"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_images_are_rejected_with_the_expected_form(policy, image, message):
    with pytest.raises(ValueError, match=message):
        policy.act(image, "turn on the stove")


@pytest.mark.parametrize("instruction, message", [("", "instruction is empty"), ("  \n", "instruction is empty"),
                                                  ("go " * 1000, "at most 1000"), (None, "must be a str")])
def test_bad_instructions_are_rejected(policy, instruction, message):
    with pytest.raises(ValueError, match=message):
        policy.act(np.zeros((64, 64, 3), dtype=np.uint8), instruction)


@pytest.mark.parametrize("changes, message", [
    ({"draft": "nope"}, "draft 'nope' is unknown"),
    ({"acceptance": "loose"}, "acceptance 'loose' is unknown"),
    ({"acceptance": "relaxed", "relaxed_threshold": -1}, "threshold must be an integer >= 0"),
    ({"draft": "history", "num_draft_tokens": 0}, "num_draft_tokens must be an integer in 1..7"),
    ({"dtype": "int8"}, "dtype 'int8' is not supported"),
    ({"device": "tpu"}, "device 'tpu' is not supported"),
    ({"verifier": "/nonexistent/openvla"}, "does not exist"),
])
def test_invalid_configs_fail_before_loading(changes, message):
    with pytest.raises(ValueError, match=message):
        validate_config(PolicyConfig(**changes))


def test_running_policy_refuses_to_change_its_verifier(policy):
    with pytest.raises(ValueError, match="'dtype' cannot change"):
        policy.build_decoder(policy.config.replace(dtype="bfloat16"))

