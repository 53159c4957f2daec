"""VLAPolicy: the whole (image, instruction) -> action path, and its input validation."""
from pathlib import Path

import numpy as np
import pytest

from spec_vla_ros.policy import PolicyConfig, VLAPolicy, validate_config
from spec_vla_ros.vla.action_tokenizer import LIBERO_GOAL_STATS, token_ids_to_actions


@pytest.fixture(scope="module")
def policy():
    return VLAPolicy(PolicyConfig(draft="ar"))


def test_act_returns_a_denormalized_action_from_the_decoded_tokens(policy, rng):
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    action, stats = policy.act(image, "put the bowl on the plate")
    assert action.shape == (7,) and action.dtype == np.float64 and np.all(np.isfinite(action))
    np.testing.assert_allclose(action, LIBERO_GOAL_STATS.unnormalize(token_ids_to_actions(stats.tokens)))
    assert stats.draft == "ar"
    assert stats.verifier_passes == 7 and stats.total_ms > 0
    again, _ = policy.act(image, "put the bowl on the plate")
    np.testing.assert_array_equal(action, again)


def test_pixel_values_normalize_the_harness_image_for_both_backbones():
    """torchvision's to_tensor + normalize (what OpenVLA's image processor does) on the harness's
    224 x 224 image, with the published OpenVLA-7B values (the default) and with others."""
    import os

    import torch
    from torchvision.transforms.functional import normalize, to_tensor

    from spec_vla_ros.vla.constants import OPENVLA_DINO_MEAN, OPENVLA_DINO_STD, SIGLIP_MEAN, SIGLIP_STD
    from spec_vla_ros.vla.preprocess import ImageNormalization, pixel_values, resize_and_crop
    other = ImageNormalization((0.1, 0.2, 0.3, 0.4, 0.5, 0.6), (0.7, 0.8, 0.9, 1.1, 1.2, 1.3))
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    for center_crop in (True, False):
        image = rng.integers(0, 256, (int(rng.integers(16, 400)), int(rng.integers(16, 400)), 3), dtype=np.uint8)
        harness = to_tensor(resize_and_crop(image, center_crop))
        expected = torch.cat([normalize(harness, OPENVLA_DINO_MEAN, OPENVLA_DINO_STD),
                              normalize(harness, SIGLIP_MEAN, SIGLIP_STD)])
        assert torch.equal(pixel_values(image, center_crop), expected), f"seed {seed}"
        expected = torch.cat([normalize(harness, other.mean[:3], other.std[:3]),
                              normalize(harness, other.mean[3:], other.std[3:])])
        assert torch.equal(pixel_values(image, center_crop, other), expected), f"seed {seed}"


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
    ({"draft": "none"}, r"draft 'none' is now spelled 'ar' \(autoregressive decoding\)$"),
    ({"draft": "history", "num_draft_tokens": 0}, r"num_draft_tokens 0: expected an integer in 1\.\.7"),
    ({"draft": "ar", "num_draft_tokens": 0}, r"num_draft_tokens 0: expected an integer in 1\.\.7$"),
    ({"draft": "ar", "num_draft_tokens": 8}, r"num_draft_tokens 8: expected an integer in 1\.\.7$"),
    ({"draft": "ar", "num_draft_tokens": True}, r"num_draft_tokens True: expected an integer in 1\.\.7$"),
    ({"acceptance": "relaxed_guarded"}, "expected one of strict, relaxed, relaxed-guarded"),
    ({"unnorm_key": "libero_spatial"}, r"unnorm_key 'libero_spatial' is not in .*expected one of \['libero_goal'\]"),
    ({"dtype": "int8"}, "dtype 'int8' is not supported"),
    ({"device": "tpu"}, "device 'tpu' is not supported"),
    ({"compile": "yes"}, r"compile 'yes' is not one of auto, always, never"),
    ({"draft_tree": "chain:3"}, r"draft_tree 'chain:3': a chain's length is the num_draft_tokens parameter"),
    ({"draft_tree": "tree:2:3"}, r"tree shape 'tree:2:3': tree depth 3 needs at least as many nodes"),
    ({"draft_tree": 50}, r"draft_tree 50: expected a string"),
    ({"verifier": "/nonexistent/openvla"}, "does not exist"),
])
def test_invalid_configs_fail_before_loading(changes, message):
    with pytest.raises(ValueError, match=message):
        validate_config(PolicyConfig(**changes))


def test_running_policy_refuses_to_change_its_verifier(policy):
    with pytest.raises(ValueError, match="'dtype' cannot change"):
        policy.build_decoder(policy.config.replace(dtype="bfloat16"))
    with pytest.raises(ValueError, match="'compile' cannot change"):
        policy.build_decoder(policy.config.replace(compile="always"))


def test_compiled_passes_are_warmed_up_before_the_first_action(policy, rng):
    """compile=auto is eager on the CPU; compile=always compiles every pass length the decoder runs
    (mamba, k 4: buckets 1..8) when the policy starts, and acting compiles nothing more."""
    from torch._dynamo.utils import counters
    assert policy.config.compile == "auto" and not policy.decoder.compiled and policy.warm_up_seconds == 0
    compiled = VLAPolicy(policy.config.replace(compile="always"))
    assert compiled.decoder.compiled and compiled.warm_up_seconds > 0
    graphs = counters["stats"]["unique_graphs"]
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    eager_tokens, _ = policy.decode(image, "put the bowl on the plate")
    compiled_tokens, stats = compiled.decode(image, "put the bowl on the plate")
    assert counters["stats"]["unique_graphs"] == graphs, "a pass was compiled during an action"
    assert stats.verifier_passes >= 1 and len(compiled_tokens) == len(eager_tokens) == 7


def test_a_policy_whose_passes_fail_to_compile_runs_them_eagerly(policy, rng, monkeypatch):
    """Compilation is the GPU path's, untested on many machines: if the warm-up raises, the policy
    says why in one line and decodes eagerly instead of failing to start."""
    from spec_vla_ros.decoding.decoder import Decoder

    def broken(self, pixel_values, prompt_ids):
        raise RuntimeError("inductor: no C++ compiler\nlong traceback")
    monkeypatch.setattr(Decoder, "warm_up", broken)
    fallback = VLAPolicy(policy.config.replace(compile="always"))
    assert not fallback.decoder.compiled and fallback.warm_up_seconds == 0
    assert fallback.compile_error == ("compiling the verifier's passes failed, running them eagerly: "
                                      "RuntimeError: inductor: no C++ compiler")
    action, _ = fallback.act(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "open the middle drawer")
    assert action.shape == (7,)



@pytest.mark.parametrize("spec_text", ["mamba@hybrid:50", "llama:relaxed:5@tree:16:3:4", "history", "ar"])
def test_a_decoder_spec_and_the_policy_config_say_the_same(policy, spec_text):
    """What eval and the harness configure (DecoderSpec) and what the node's parameters configure
    (PolicyConfig) convert both ways, and the decoder built from the config proposes in the spec's
    shape (eval's `mamba@hybrid:50` once ran chains: the config dropped the tree)."""
    from spec_vla_ros.decoding.spec import DecoderSpec
    spec = DecoderSpec.parse(spec_text)
    config = policy.config.with_spec(spec)
    assert config.spec == spec and config.spec.name == spec.name
    decoder = policy.build_decoder(config)
    assert (decoder.shape, decoder.draft_name) == (spec.shape, spec.draft)


@pytest.mark.parametrize("acceptance", ["strict", "relaxed", "relaxed-guarded"])
def test_every_acceptance_rule_is_a_valid_policy_setting(acceptance):
    validate_config(PolicyConfig(draft="history", acceptance=acceptance, relaxed_threshold=9))


@pytest.fixture(scope="module")
def written_checkpoint(miniature, tmp_path_factory):
    from spec_vla_ros.vla.checkpoint import write_checkpoint
    return write_checkpoint(miniature, tmp_path_factory.mktemp("openvla") / "miniature")


def refuse_to_load(monkeypatch):
    import spec_vla_ros.policy as policy_module

    def fail(*args, **kwargs):
        raise AssertionError("the verifier was loaded before the configuration was checked")
    monkeypatch.setattr(policy_module, "load_verifier", fail)


def test_an_unknown_unnorm_key_is_refused_before_the_checkpoint_loads(written_checkpoint, monkeypatch):
    refuse_to_load(monkeypatch)
    config = PolicyConfig(verifier=str(written_checkpoint), draft="ar", unnorm_key="libero_10")
    with pytest.raises(ValueError, match=r"unnorm_key 'libero_10' is not in .*expected one of \['libero_goal'\]"):
        validate_config(config)
    with pytest.raises(ValueError, match="unnorm_key 'libero_10'"):
        VLAPolicy(config)


def test_statistics_files_are_checked_before_the_checkpoint_loads(written_checkpoint, tmp_path, monkeypatch):
    import json
    import shutil
    refuse_to_load(monkeypatch)
    copy = Path(shutil.copytree(written_checkpoint, tmp_path / "copy"))
    statistics = copy / "dataset_statistics.json"
    entry = json.loads(statistics.read_text())["libero_goal"]
    statistics.write_text(json.dumps({"libero_goal_no_noops": entry}))       # OpenVLA's fallback key
    validate_config(PolicyConfig(verifier=str(copy), draft="ar"))
    entry["action"]["q99"] = entry["action"]["q99"][:6]
    statistics.write_text(json.dumps({"libero_goal": entry}))
    with pytest.raises(ValueError, match="'q99' for 'libero_goal' must be 7 finite numbers"):
        validate_config(PolicyConfig(verifier=str(copy), draft="ar"))
    statistics.unlink()                                                       # then config.json's norm_stats
    validate_config(PolicyConfig(verifier=str(copy), draft="ar"))
    with pytest.raises(ValueError, match="unnorm_key 'bridge'"):
        validate_config(PolicyConfig(verifier=str(copy), draft="ar", unnorm_key="bridge"))


def test_a_checkpoint_without_a_mask_denormalizes_the_gripper(written_checkpoint, tmp_path, rng):
    """OpenVLA's default mask is all true: the loaded policy de-normalizes every dimension."""
    import json
    import shutil
    copy = Path(shutil.copytree(written_checkpoint, tmp_path / "copy"))
    statistics = json.loads((copy / "dataset_statistics.json").read_text())
    action = statistics["libero_goal"]["action"]
    del action["mask"]
    action["q01"][6], action["q99"][6] = -0.5, 0.25
    (copy / "dataset_statistics.json").write_text(json.dumps(statistics))
    policy = VLAPolicy(PolicyConfig(verifier=str(copy), draft="ar"))
    action_out, stats = policy.act(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "turn on the stove")
    x = token_ids_to_actions(stats.tokens)
    q01, q99 = np.array(action["q01"]), np.array(action["q99"])
    np.testing.assert_allclose(action_out, 0.5 * (x + 1) * (q99 - q01) + q01, rtol=0, atol=1e-12)


def test_a_policy_start_reads_its_drafts_checkpoint_once(draft_config_reads):
    from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS
    reads = draft_config_reads
    policy = VLAPolicy(PolicyConfig(draft="mamba"))
    assert reads == [PACKAGED_CHECKPOINTS / "mamba"]
    assert policy.decoder.draft.name == "mamba"
    config = policy.config.replace(draft="llama")
    resolved = VLAPolicy.validate(config)                   # a node's parameter callback
    policy.set_decoder(policy.build_decoder(config, resolved), config)
    assert reads == [PACKAGED_CHECKPOINTS / "mamba", PACKAGED_CHECKPOINTS / "llama"]
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    assert policy.decode(image, "turn on the stove")[1].draft_checkpoint == str(PACKAGED_CHECKPOINTS / "llama")


def test_a_resolved_draft_of_another_config_is_refused(policy):
    resolved = VLAPolicy.validate(policy.config.replace(draft="history"))
    with pytest.raises(ValueError, match="resolved draft 'history'"):
        policy.build_decoder(policy.config.replace(draft="mamba"), resolved)
