"""Draft checkpoints round-trip, and every bad configuration fails clearly before decoding."""
import json

import pytest
import torch

from spec_vla_ros.decoding.acceptance import Acceptance
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.checkpoints import CONFIG, WEIGHTS, DraftCheckpointError, load_head, save_draft
from spec_vla_ros.drafts.eagle_head import EagleDraft, EagleHead, default_core_config
from spec_vla_ros.drafts.history import HistoryDraft
from spec_vla_ros.drafts.mamba import MambaConfig
from spec_vla_ros.drafts.registry import check_draft_config, load_draft
from spec_vla_ros.policy import PolicyConfig, validate_config
from spec_vla_ros.vla.constants import PADDED_VOCAB_SIZE


@pytest.fixture(scope="module")
def saved(miniature, tmp_path_factory):
    """A random mamba and llama head for the miniature, saved."""
    directories = {}
    for kind in ("mamba", "llama"):
        torch.manual_seed(0)
        head = EagleHead(kind, default_core_config(kind, miniature.model))
        directories[kind] = save_draft(tmp_path_factory.mktemp(kind), head, miniature.name,
                                       {"val_accuracy": [0.5] * 6})
    return directories


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_round_trip(miniature, saved, kind):
    head, config = load_head(saved[kind])
    torch.manual_seed(0)
    original = EagleHead(kind, default_core_config(kind, miniature.model))
    assert config["kind"] == kind and config["verifier"] == miniature.name and config["hidden_size"] == 256
    assert config["training"]["val_accuracy"] == [0.5] * 6
    for key, value in original.state_dict().items():
        assert torch.equal(head.state_dict()[key], value), key
    # the verifier's embedding and lm_head are used, never stored
    assert not any(PADDED_VOCAB_SIZE in tensor.shape for tensor in head.state_dict().values())
    hidden, embeds = torch.randn(2, 9, 256), torch.randn(2, 9, 256)
    with torch.no_grad():
        assert torch.allclose(head(hidden, embeds)[0], original.eval()(hidden, embeds)[0], atol=1e-6)
    draft = load_draft(kind, str(saved[kind]), miniature)
    assert isinstance(draft, EagleDraft) and draft.name == kind


def test_packaged_drafts_are_for_the_miniature(miniature):
    for name in ("mamba", "llama"):
        check_draft_config(name, "", "miniature")
        assert load_draft(name, "", miniature).name == name
    assert isinstance(load_draft("history", "", miniature), HistoryDraft)
    assert load_draft("none", "", miniature) is None


def expect_error(match, name, checkpoint, verifier="miniature"):
    with pytest.raises(ValueError, match=match):
        check_draft_config(name, str(checkpoint), verifier)


def test_unknown_name_and_missing_checkpoint(tmp_path):
    expect_error("unknown", "medusa", "")
    expect_error("does not exist", "mamba", tmp_path / "nowhere")
    expect_error("missing draft.json", "mamba", tmp_path)


def test_checkpoint_for_another_verifier(miniature, saved, tmp_path):
    small = save_draft(tmp_path / "small", EagleHead("mamba", MambaConfig(d_model=128).to_dict()), miniature.name)
    expect_error("hidden size 128.*hidden size is 256", "mamba", small)
    other = save_draft(tmp_path / "other", EagleHead("mamba", default_core_config("mamba", miniature.model)),
                       "openvla-7b-finetuned-libero-goal")
    expect_error("trained for verifier 'openvla-7b-finetuned-libero-goal'", "mamba", other)
    expect_error("is a 'mamba' draft, not a 'llama' draft", "llama", saved["mamba"])
    with pytest.raises(ValueError, match="hidden size 128"):
        load_draft("mamba", str(small), miniature)


def test_a_directory_of_drafts_serves_every_kind(miniature, saved, tmp_path):
    """One draft_checkpoint for both kinds, laid out like the packaged drafts: switching `draft`
    alone picks the matching sub-directory; a kind without one is refused clearly."""
    import shutil
    for kind in ("mamba", "llama"):
        shutil.copytree(saved[kind], tmp_path / "drafts" / kind)
        check_draft_config(kind, str(tmp_path / "drafts"), "miniature")
        assert load_draft(kind, str(tmp_path / "drafts"), miniature).head.kind == kind
    shutil.rmtree(tmp_path / "drafts" / "llama")
    expect_error("missing draft.json.*one sub-directory per kind", "llama", tmp_path / "drafts")


def test_real_verifier_needs_an_explicit_checkpoint(tmp_path):
    verifier = tmp_path / "openvla-7b-finetuned-libero-goal"
    verifier.mkdir()
    (verifier / "config.json").write_text(json.dumps({
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "text_config": {"model_type": "llama", "vocab_size": 32064, "pad_token_id": 32000}}))
    expect_error("needs draft_checkpoint", "llama", "", verifier)
    check_draft_config("history", "", str(verifier))


def test_corrupted_checkpoints(saved, tmp_path):
    for name, damage in [(CONFIG, b"{ not json"), (WEIGHTS, b"\x00" * 64), (CONFIG, b'{"format": "other"}')]:
        broken = tmp_path / name.replace(".", "_") / str(len(damage))
        broken.mkdir(parents=True)
        for file in (CONFIG, WEIGHTS):
            (broken / file).write_bytes((saved["mamba"] / file).read_bytes())
        (broken / name).write_bytes(damage)
        with pytest.raises(DraftCheckpointError, match="corrupted|not a draft checkpoint"):
            check_draft_config("mamba", str(broken), "miniature")


def test_bad_decoding_parameters_fail_before_decoding(miniature):
    draft = HistoryDraft()
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_draft_tokens"):
            Decoder(miniature.model, draft, k)
        with pytest.raises(ValueError, match="num_draft_tokens"):
            validate_config(PolicyConfig(draft="history", num_draft_tokens=k))
    with pytest.raises(ValueError, match="threshold"):
        Acceptance.from_name("relaxed", -1)
    with pytest.raises(ValueError, match="threshold"):
        validate_config(PolicyConfig(acceptance="relaxed", relaxed_threshold=-3))
    with pytest.raises(ValueError, match="unknown"):
        validate_config(PolicyConfig(draft="medusa"))
