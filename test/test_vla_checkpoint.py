import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spec_vla_ros.commands.write_miniature import main
from spec_vla_ros.vla.checkpoint import CheckpointError, load_checkpoint, write_checkpoint
from spec_vla_ros.vla.miniature import build_miniature
from spec_vla_ros.vla.verifiers import load_verifier
from spec_vla_ros.vla.constants import (ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, OPENVLA_DINO_MEAN, OPENVLA_DINO_STD,
                                        PADDED_VOCAB_SIZE)


@pytest.fixture(scope="module")
def written(miniature, tmp_path_factory):
    return write_checkpoint(miniature, tmp_path_factory.mktemp("ckpt") / "openvla-miniature", max_shard_size="20MB")


def copy_of(written, tmp_path):
    return shutil.copytree(written, tmp_path / "copy")


def test_miniature_is_deterministic_and_openvla_shaped(miniature):
    again = build_miniature()
    for key, value in miniature.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    keys = miniature.model.state_dict().keys()
    assert any(k.startswith("vision_backbone.featurizer.blocks.0.ls1.scale_factor") for k in keys)
    assert any(k.startswith("vision_backbone.fused_featurizer.attn_pool.") for k in keys)
    assert {"projector.fc1.weight", "projector.fc2.weight", "projector.fc3.weight"} <= set(keys)
    assert miniature.model.language_model.lm_head.weight.shape[0] == PADDED_VOCAB_SIZE
    assert not any("gamma" in k for k in keys)


def test_written_checkpoint_has_the_openvla_layout(written):
    names = {p.name for p in written.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "dataset_statistics.json", "tokenizer.json",
            "preprocessor_config.json"} <= names
    assert len([n for n in names if n.startswith("model-") and n.endswith(".safetensors")]) > 1
    config = json.loads((written / "config.json").read_text())
    assert config["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert config["text_config"]["vocab_size"] == PADDED_VOCAB_SIZE
    assert "libero_goal" in config["norm_stats"]
    processor = json.loads((written / "preprocessor_config.json").read_text())   # OpenVLA-7B's layout and values
    assert processor["tvf_normalize_params"] == [
        {"inplace": False, "mean": list(OPENVLA_DINO_MEAN), "std": list(OPENVLA_DINO_STD)},
        {"inplace": False, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}]
    assert processor["image_resize_strategy"] == "resize-naive" and processor["use_fused_vision_backbone"]
    assert processor["input_sizes"] == [[3, 224, 224], [3, 224, 224]]


def test_loads_back_bit_identically(miniature, written):
    loaded = load_checkpoint(written)
    original = miniature.model.state_dict()
    restored = loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    ids = [1, 29871, 80, 29871]
    assert loaded.tokenizer("a b").input_ids == miniature.tokenizer("a b").input_ids
    pixel_values = torch.randn(6, 224, 224)
    with torch.no_grad():
        a = miniature.model.embed_inputs(pixel_values[None], torch.tensor([ids]))
        b = loaded.model.embed_inputs(pixel_values[None], torch.tensor([ids]))
    assert torch.equal(a, b)
    assert load_verifier(str(written)).name == miniature.name
    assert (loaded.image_normalization.mean, loaded.image_normalization.std) == \
        (miniature.image_normalization.mean, miniature.image_normalization.std)
    assert loaded.image_normalization.mean[:3] == OPENVLA_DINO_MEAN and "preprocessor_config.json" in \
        loaded.image_normalization.source


def test_written_miniature_acts_like_the_in_memory_one(miniature, tmp_path):
    """`spec-vla-write-miniature DIR`, then `load_verifier(DIR)`: the same actions, preprocessing included."""
    from spec_vla_ros.decoding.decoder import Decoder
    from spec_vla_ros.vla.preprocess import pixel_values
    from spec_vla_ros.vla.prompt import prompt_token_ids

    main([str(tmp_path / "openvla-miniature")])
    loaded = load_verifier(str(tmp_path / "openvla-miniature"))
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    for instruction in ("turn on the stove", "Put the bowl on the plate"):
        image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        tokens = [Decoder(v.model).decode(pixel_values(image, True, v.image_normalization),
                                          prompt_token_ids(v.tokenizer, instruction))[0] for v in (miniature, loaded)]
        assert tokens[0] == tokens[1], f"seed {seed}"


def edit_shard(directory, edit):
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shard = directory / index["weight_map"]["projector.fc1.weight"]
    tensors = load_file(shard)
    edit(tensors)
    save_file(tensors, shard, metadata={"format": "pt"})
    return index


def test_missing_key_is_named(written, tmp_path):
    directory = copy_of(written, tmp_path)
    edit_shard(directory, lambda t: t.pop("projector.fc1.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys: projector\.fc1\.weight"):
        load_checkpoint(directory)


def test_extra_key_is_named(written, tmp_path):
    directory = copy_of(written, tmp_path)
    edit_shard(directory, lambda t: t.update({"projector.fc4.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys: projector\.fc4\.weight"):
        load_checkpoint(directory)


def test_misshaped_key_is_named(written, tmp_path):
    directory = copy_of(written, tmp_path)
    edit_shard(directory, lambda t: t.update({"projector.fc1.weight": torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: projector\.fc1\.weight \(checkpoint \(3, 3\)"):
        load_checkpoint(directory)


@pytest.mark.parametrize("remove, message", [("config.json", "missing config.json"),
                                             ("tokenizer.json", "missing tokenizer files"),
                                             ("dataset_statistics.json", None),
                                             ("preprocessor_config.json", None)])
def test_missing_files_are_named(written, tmp_path, remove, message):
    directory = copy_of(written, tmp_path)
    (directory / remove).unlink()
    if message is None:          # statistics fall back to config.json's norm_stats, as OpenVLA does;
        loaded = load_checkpoint(directory)     # normalization to the published checkpoints' values
        assert loaded.norm_stats["libero_goal"] and loaded.image_normalization.mean[:3] == OPENVLA_DINO_MEAN
        return
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(directory)


def test_missing_weights_are_named(written, tmp_path):
    directory = copy_of(written, tmp_path)
    shard = sorted(directory.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        load_checkpoint(directory)
    (directory / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_miniature_answers_with_varied_action_tokens(miniature, rng):
    from spec_vla_ros.decoding.decoder import Decoder
    from spec_vla_ros.vla.preprocess import pixel_values
    from spec_vla_ros.vla.prompt import prompt_token_ids

    decoder, seen = Decoder(miniature.model), set()
    for instruction in ("turn on the stove", "put the bowl on the plate", "open the middle drawer"):
        image = rng.integers(0, 256, (256, 256, 3), dtype="uint8")
        tokens, stats = decoder.decode(pixel_values(image), prompt_token_ids(miniature.tokenizer, instruction))
        assert all(ACTION_TOKEN_MIN <= t <= ACTION_TOKEN_MAX for t in tokens) and stats.verifier_passes == 7
        seen.update(tokens)
    assert len(seen) > 5
