"""Mamba core: the full-sequence scan and single-token stepping agree; rollback is exact."""
import copy
import os

import pytest
import torch

from spec_vla_ros.drafts import mamba
from spec_vla_ros.drafts.eagle_head import (EARLY_COPY, EARLY_FROM_HEAD, EagleDraft, EagleHead,
                                            default_core_config, early_guess_mode)
from spec_vla_ros.drafts.mamba import MambaConfig, MambaCore

D_MODEL, LENGTH = 64, 40


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def core():
    torch.manual_seed(0)
    return MambaCore(MambaConfig(d_model=D_MODEL, num_layers=2)).eval()


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(2, LENGTH, D_MODEL, generator=torch.Generator().manual_seed(1))


def step_by_step(core, x, state=None):
    outputs = []
    for t in range(x.shape[1]):
        out, state = core(x[:, t:t + 1], state)
        outputs.append(out)
    return torch.cat(outputs, dim=1), state


@torch.no_grad()
def test_full_sequence_scan_equals_stepping(core, inputs):
    full, full_state = core(inputs)
    stepped, stepped_state = step_by_step(core, inputs)
    assert relative_error(stepped, full) < 1e-4
    for (conv_a, ssm_a), (conv_b, ssm_b) in zip(stepped_state, full_state):
        assert relative_error(conv_a, conv_b) < 1e-4
        assert relative_error(ssm_a, ssm_b) < 1e-4


@torch.no_grad()
def test_scan_continues_exactly_from_any_state(core, inputs):
    """Feeding a sequence in pieces (e.g. accepted tokens after the prompt) equals feeding it whole."""
    full, _ = core(inputs)
    for split in (1, 3, LENGTH // 2, LENGTH - 2):
        head, state = core(inputs[:, :split])
        tail, _ = core(inputs[:, split:], state)
        assert relative_error(torch.cat([head, tail], dim=1), full) < 1e-5, split


@torch.no_grad()
def test_rollback_to_any_step_reproduces_stepping_that_far(core, inputs):
    prompt, steps = inputs[:, :LENGTH - 8], inputs[:, LENGTH - 8:]
    _, state = core(prompt)
    snapshots = [core.snapshot(state)]
    for t in range(steps.shape[1]):
        _, state = core(steps[:, t:t + 1], state)
        snapshots.append(core.snapshot(state))
    for drafted in range(steps.shape[1] + 1):
        restored = core.restore(state, snapshots[drafted])
        _, fresh = core(prompt)
        for t in range(drafted):
            _, fresh = core(steps[:, t:t + 1], fresh)
        for layer_restored, layer_fresh in zip(restored, fresh):
            for a, b in zip(layer_restored, layer_fresh):
                assert torch.equal(a, b), drafted


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_draft_rollback_matches_a_draft_that_never_speculated(miniature, kind):
    """propose() then accept() of any prefix leaves the draft exactly where feeding only that prefix would."""
    torch.manual_seed(0)
    head = EagleHead(kind, default_core_config(kind, miniature.model)).eval()
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(30, miniature.model.hidden_size, generator=generator)
    embeds = torch.randn(30, miniature.model.hidden_size, generator=generator)
    true_hidden = torch.randn(7, miniature.model.hidden_size, generator=generator)
    speculating, plain = EagleDraft(head, miniature.model), EagleDraft(head, miniature.model)
    for accepted in range(5):
        speculating.begin(hidden, embeds)
        plain.begin(hidden, embeds)
        proposals = speculating.propose(31900, 4)
        tokens = [31900] + proposals[:accepted]
        speculating.accept(tokens, true_hidden[:len(tokens)])
        plain.accept(tokens, true_hidden[:len(tokens)])
        assert speculating.propose(31850, 3) == plain.propose(31850, 3), accepted


@pytest.mark.skipif(not (torch.cuda.is_available() and mamba.selective_scan_fn is not None),
                    reason="needs CUDA and mamba_ssm")
@torch.no_grad()
def test_kernels_match_the_pytorch_path(core, inputs, monkeypatch):
    gpu_core, x = copy.deepcopy(core).to("cuda"), inputs.to("cuda")
    kernel_out, kernel_state = gpu_core(x)
    kernel_stepped, _ = step_by_step(gpu_core, x)
    monkeypatch.setattr(mamba, "selective_scan_fn", None)
    monkeypatch.setattr(mamba, "selective_state_update", None)
    reference, reference_state = gpu_core(x)
    assert relative_error(kernel_out, reference) < 1e-3
    assert relative_error(kernel_stepped, reference) < 1e-3
    assert relative_error(kernel_state[-1][1], reference_state[-1][1]) < 1e-3


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_carried_state_does_not_depend_on_how_the_action_was_accepted(miniature, kind):
    """All 7 tokens accepted from the early guess (the prefill read them at once), or one verifier
    pass per token after proposals: the next action's early proposals are the same."""
    torch.manual_seed(0)
    head = EagleHead(kind, default_core_config(kind, miniature.model), carry=True).eval()
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(30, miniature.model.hidden_size, generator=generator)
    embeds = torch.randn(30, miniature.model.hidden_size, generator=generator)
    true_hidden = torch.randn(7, miniature.model.hidden_size, generator=generator)
    tokens = [31744 + 37 * i for i in range(7)]
    at_once, pass_by_pass = EagleDraft(head, miniature.model), EagleDraft(head, miniature.model)
    at_once.begin(hidden, embeds)
    at_once.accept(tokens, true_hidden)
    at_once.end_action(tokens)
    pass_by_pass.begin(hidden, embeds)
    for index in range(6):
        pass_by_pass.propose(tokens[index], 2)
        pass_by_pass.accept([tokens[index]], true_hidden[index:index + 1])
    pass_by_pass.end_action(tokens)
    early = at_once.propose_early(7)
    assert len(early) == 7 and early == pass_by_pass.propose_early(7)
    plain = EagleDraft(EagleHead(kind, default_core_config(kind, miniature.model)).eval(), miniature.model)
    plain.begin(hidden, embeds)
    plain.end_action(tokens)
    assert plain.propose_early(7) == []                # a head trained without --carry guesses nothing early


def test_copying_head_proposes_the_previous_action_without_stepping(miniature, monkeypatch):
    """EARLY_COPY: the early guesses are the last action's tokens and the head runs no step for
    them; the same head in EARLY_FROM_HEAD steps once per guess."""
    torch.manual_seed(0)
    head = EagleHead("mamba", default_core_config("mamba", miniature.model), carry=True).eval()
    hidden, embeds = torch.randn(30, miniature.model.hidden_size), torch.randn(30, miniature.model.hidden_size)
    tokens = [31744 + 37 * i for i in range(7)]
    steps = []
    step = head.step
    monkeypatch.setattr(head, "step", lambda *args: steps.append(1) or step(*args))
    for mode, expected_steps in ((EARLY_COPY, 0), (EARLY_FROM_HEAD, 5)):
        draft = EagleDraft(head, miniature.model, mode)
        draft.begin(hidden, embeds)
        draft.accept(tokens, torch.randn(7, miniature.model.hidden_size))
        draft.end_action(tokens)
        steps.clear()
        early = draft.propose_early(5)
        assert len(steps) == expected_steps and len(early) == 5
        if mode == EARLY_COPY:
            assert early == tokens[:5]
    with pytest.raises(ValueError, match="early_guesses 'both' is unknown"):
        EagleDraft(head, miniature.model, "both")


def test_early_guess_mode_follows_the_checkpoints_validation_record():
    record = {"val_early_chain_accuracy": [0.44, 0.31, 0.24], "val_history_early_accuracy": [0.44, 0.32, 0.24]}
    assert early_guess_mode({"carry": True, "training": record}) == EARLY_COPY
    better = {**record, "val_early_chain_accuracy": [0.46, 0.33, 0.25]}
    assert early_guess_mode({"carry": True, "training": better}) == EARLY_FROM_HEAD
    assert early_guess_mode({"carry": True, "training": {}}) == EARLY_FROM_HEAD      # no record: as trained
    assert early_guess_mode({"carry": False, "training": record}) == EARLY_FROM_HEAD


def fresh_head_and_inputs(miniature, kind: str, length: int):
    """A random head of the miniature's width and `length` random (hidden, embedding) pairs [1, length, H],
    from a fresh seed (returned for the failure message)."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    head = EagleHead(kind, default_core_config(kind, miniature.model)).eval()
    size = miniature.model.hidden_size
    return head, torch.randn(1, length, size), torch.randn(1, length, size), seed


@pytest.mark.parametrize("kind", ["mamba", "llama"])
@torch.no_grad()
def test_the_one_token_step_equals_the_sequence_forward(miniature, kind):
    """EagleHead.step (fc split into the hidden half and a per-token input, the cores' step_rows)
    computes what forward() computes for one more token, from any state."""
    head, hidden, embeds, seed = fresh_head_and_inputs(miniature, kind, 12)
    whole, _ = head(hidden, embeds)
    _, state = head(hidden[:, :8], embeds[:, :8])
    for t in range(8, 12):
        stepped, state = head.step(hidden[:, t], head.token_input(embeds[:, t]), state)
        assert relative_error(stepped, whole[:, t]) < 1e-5, (seed, t)


@pytest.mark.parametrize("kind", ["mamba", "llama"])
@torch.no_grad()
def test_absorbing_positions_leaves_the_state_forward_leaves(miniature, kind):
    """core.absorb (a prompt window or accepted tokens whose outputs nobody reads; the Llama core
    computes only their keys and values) leaves a state from which the next step predicts what it
    predicts after forward() over the same positions."""
    head, hidden, embeds, seed = fresh_head_and_inputs(miniature, kind, 14)
    inputs = head.fc(torch.cat([hidden, embeds], dim=-1))[0]
    _, forward_state = head(hidden[:, :12], embeds[:, :12])
    absorbed = head.core.absorb(inputs[:9])
    absorbed = head.core.absorb(inputs[9:12], absorbed)           # continued from a state, as accept() does
    for t in (12, 13):
        token_input = head.token_input(embeds[:, t])
        expected, forward_state = head.step(hidden[:, t], token_input, forward_state)
        stepped, absorbed = head.step(hidden[:, t], token_input, absorbed)
        assert relative_error(stepped, expected) < 1e-5, (seed, t)
