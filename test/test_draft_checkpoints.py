"""Draft checkpoints round-trip, and every bad configuration fails clearly before decoding."""
import json

import pytest
import torch

from spec_vla_ros.decoding.acceptance import Acceptance
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.checkpoints import CONFIG, WEIGHTS, DraftCheckpointError, load_head, save_draft
from spec_vla_ros.drafts.eagle_head import EagleDraft, EagleHead, default_core_config, early_guess_mode
from spec_vla_ros.drafts.history import HistoryDraft
from spec_vla_ros.drafts.mamba import MambaConfig
from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS, load, load_draft, resolve
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
        resolve(name, "", "miniature")
        assert load_draft(name, "", miniature).name == name
    assert isinstance(load_draft("history", "", miniature), HistoryDraft)
    assert load_draft("ar", "", miniature) is None
    with pytest.raises(ValueError, match="^draft 'none' is now spelled 'ar' \\(autoregressive decoding\\)$"):
        load_draft("none", "", miniature)


def test_packaged_heads_make_early_guesses_as_their_records_say(miniature):
    for kind in ("mamba", "llama"):
        config = json.loads((PACKAGED_CHECKPOINTS / kind / CONFIG).read_text())
        assert load_draft(kind, "", miniature).early_guesses == early_guess_mode(config)


def test_resolve_holds_what_load_needs_and_load_checks_nothing_on_disk(miniature, saved, tmp_path, monkeypatch):
    import shutil

    import spec_vla_ros.drafts.checkpoints as checkpoints
    import spec_vla_ros.drafts.registry as registry
    resolved, by_name = resolve("mamba", "", "miniature"), resolve("llama", "", miniature.name, 256)
    assert resolved.directory == PACKAGED_CHECKPOINTS / "mamba" and resolved.config["kind"] == "mamba"
    assert (resolved.verifier_name, resolved.hidden_size) == (miniature.name, miniature.model.hidden_size)
    assert resolve("history", "", "miniature").directory is None and resolve("ar", "", "miniature").config is None

    def no_reading(directory):
        raise AssertionError(f"{directory} was read again while loading")
    for module in (checkpoints, registry):
        monkeypatch.setattr(module, "read_draft_config", no_reading)
    assert load(resolved, miniature).head.kind == "mamba"
    assert load(by_name, miniature).head.kind == "llama"
    monkeypatch.undo()

    copy = shutil.copytree(saved["llama"], tmp_path / "llama")
    elsewhere = resolve("llama", str(copy), "miniature")
    (copy / CONFIG).unlink()                    # loading uses the resolved config, not the file
    assert load(elsewhere, miniature).head.kind == "llama"
    other = save_draft(tmp_path / "other", EagleHead("mamba", default_core_config("mamba", miniature.model)), "other")
    with pytest.raises(ValueError, match="resolved for verifier 'other', not for the loaded 'miniature-seed0'"):
        load(resolve("mamba", str(other), "other"), miniature)


def expect_error(match, name, checkpoint, verifier="miniature"):
    with pytest.raises(ValueError, match=match):
        resolve(name, str(checkpoint), verifier)


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
        resolve(kind, str(tmp_path / "drafts"), "miniature")
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
    resolve("history", "", str(verifier))


def test_corrupted_checkpoints(saved, tmp_path):
    for name, damage in [(CONFIG, b"{ not json"), (WEIGHTS, b"\x00" * 64), (CONFIG, b'{"format": "other"}')]:
        broken = tmp_path / name.replace(".", "_") / str(len(damage))
        broken.mkdir(parents=True)
        for file in (CONFIG, WEIGHTS):
            (broken / file).write_bytes((saved["mamba"] / file).read_bytes())
        (broken / name).write_bytes(damage)
        with pytest.raises(DraftCheckpointError, match="corrupted|not a draft checkpoint"):
            resolve("mamba", str(broken), "miniature")


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
