"""Autoregressive decoding over VerifierSession is exactly OpenVLA's greedy decoding."""
import time

import numpy as np
import pytest
import torch

from spec_vla_ros.decoding.decoder import READ_AHEAD_ROWS, Decoder
from spec_vla_ros.drafts.base import Draft
from spec_vla_ros.vla.constants import ACTION_DIM, EMPTY_TOKEN_ID, NUM_PATCHES
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import VerifierSession, lm_head_logits

INSTRUCTIONS = ("Open the middle drawer of the cabinet", "put the bowl on the stove", "turn on the stove",
                "push the plate to the front of the stove", "put the wine bottle on the rack", "x")


def random_observations(rng, count):
    for index in range(count):
        size = int(rng.integers(64, 300))
        yield rng.integers(0, 256, (size, size, 3), dtype=np.uint8), INSTRUCTIONS[index % len(INSTRUCTIONS)]


def hf_generate(model, embeds):
    """transformers' own greedy generate on the language model, from the same input embeddings."""
    with torch.no_grad():
        out = model.language_model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2]),
                                            max_new_tokens=ACTION_DIM, min_new_tokens=ACTION_DIM,
                                            do_sample=False, pad_token_id=0)
    return out[0, -ACTION_DIM:].tolist()


def full_recompute(model, embeds):
    """No cache at all: one full forward per token."""
    tokens = []
    with torch.no_grad():
        for _ in range(ACTION_DIM):
            extra = model.embed_tokens(torch.tensor([tokens], dtype=torch.long)) if tokens else embeds[:, :0]
            logits = model.language_model(inputs_embeds=torch.cat([embeds, extra], 1), use_cache=False).logits
            tokens.append(int(logits[0, -1].argmax()))
    return tokens


@pytest.mark.parametrize("instruction", ["  Open The Drawer ", "turn on the stove", "\tPut the bowl on the plate\n"])
def test_prompt_follows_openvla(miniature, instruction):
    """OpenVLA's get_vla_action: f"In: What action should the robot take to {task_label.lower()}?\\nOut:",
    lowercased, never stripped; predict_action appends 29871 when the ids do not end with it."""
    openvla_prompt = f"In: What action should the robot take to {instruction.lower()}?\nOut:"
    ids = prompt_token_ids(miniature.tokenizer, instruction)
    assert ids[0] == 1 and ids[-1] == EMPTY_TOKEN_ID
    assert ids[:-1] == miniature.tokenizer(openvla_prompt).input_ids
    assert miniature.tokenizer.decode(ids[1:-1]) == openvla_prompt


def test_ar_decoding_matches_generate_and_full_recompute(miniature, rng):
    decoder = Decoder(miniature.model)
    for image, instruction in random_observations(rng, 8):
        pv = pixel_values(image)
        ids = prompt_token_ids(miniature.tokenizer, instruction)
        tokens, stats = decoder.decode(pv, ids)
        with torch.no_grad():
            embeds = miniature.model.embed_inputs(pv[None], torch.tensor([ids]))
        assert embeds.shape[1] == len(ids) + NUM_PATCHES
        assert tokens == hf_generate(miniature.model, embeds), instruction
        assert tokens == full_recompute(miniature.model, embeds), instruction
        assert stats.verifier_passes == ACTION_DIM and stats.acceptance_length == 1.0


def test_truncate_rolls_the_cache_back_exactly(miniature, rng):
    image, instruction = next(random_observations(rng, 1))
    session = VerifierSession(miniature.model)
    session.prefill(pixel_values(image), prompt_token_ids(miniature.tokenizer, instruction))
    start = session.length
    first = session.extend([31900, 31800, 31850])
    session.truncate(start + 1)
    assert session.length == start + 1
    again = session.extend([31800])
    torch.testing.assert_close(again.logits[0], first.logits[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again.hidden[0], first.hidden[1], rtol=1e-5, atol=1e-5)


def test_a_cpu_pass_computes_the_logits_rows_it_is_asked_for(miniature, rng, monkeypatch):
    """On the CPU a pass keeps its hidden states and computes logits rows when read, in blocks of
    at least two (one read of the lm_head either way) kept for later reads: any split of the rows
    gives the tokens of all rows at once, and a decoder whose first proposal is rejected reads one
    block per pass, no row past READ_AHEAD_ROWS."""
    import spec_vla_ros.vla.session as session_module
    image, instruction = next(random_observations(rng, 1))
    session = VerifierSession(miniature.model)
    session.prefill(pixel_values(image), prompt_token_ids(miniature.tokenizer, instruction))
    rows_computed = []
    original = session_module.lm_head_logits
    monkeypatch.setattr(session_module, "lm_head_logits",
                        lambda weight, hidden: rows_computed.append(hidden.shape[0]) or original(weight, hidden))
    step = session.extend([31900, 31800, 31850, 31810])
    assert rows_computed == []
    split = step.greedy(0, 1) + step.greedy(1, 3) + step.greedy(3)
    assert rows_computed == [2, 2]
    assert split == step.greedy() == step.logits.argmax(-1).tolist() and rows_computed[-1] == 4

    class Rejected(Draft):                   # proposes a token the verifier never picks first
        name = "rejected"
        def propose(self, next_token, k): return [0] * k
    rows_computed.clear()
    monkeypatch.setattr(session_module, "lm_head_logits",        # logits read late are still verifier time
                        lambda weight, hidden: rows_computed.append(hidden.shape[0]) or time.sleep(0.02)
                        or original(weight, hidden))
    decoder = Decoder(miniature.model, Rejected(), num_draft_tokens=4)
    tokens, stats = decoder.decode(pixel_values(image), prompt_token_ids(miniature.tokenizer, instruction))
    # one read per pass: the pending position's row and the read-ahead along the rejected chain
    passes_rows = [min(READ_AHEAD_ROWS, 1 + proposed) for proposed in stats.proposed_per_pass]
    assert stats.verifier_passes == ACTION_DIM and rows_computed == passes_rows
    assert max(passes_rows) == READ_AHEAD_ROWS < 1 + max(stats.proposed_per_pass)
    assert stats.verify_ms >= 20 * ACTION_DIM and stats.draft_ms < 20


@pytest.mark.parametrize("instruction", ["", "   "])
def test_empty_instruction_is_rejected(miniature, instruction):
    with pytest.raises(ValueError, match="instruction is empty"):
        prompt_token_ids(miniature.tokenizer, instruction)


@pytest.mark.parametrize("rows", range(1, 9))
def test_lm_head_logits_are_the_lm_heads_product_for_any_number_of_rows(miniature, rows):
    """vla.session computes logits with its own kernel choice on the CPU; the values are the
    lm_head's (float rounding apart) for passes of every length a decoder makes."""
    lm_head = miniature.model.language_model.lm_head
    hidden = torch.randn(rows, miniature.model.hidden_size, generator=torch.Generator().manual_seed(rows))
    with torch.no_grad():
        expected = lm_head(hidden).float()
    logits = lm_head_logits(lm_head.weight, hidden)
    assert logits.shape == expected.shape == (rows, lm_head.weight.shape[0]) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
