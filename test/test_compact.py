"""The compact OpenVLA (vla/compact.py), the size the embedded default is to be trained at: its
word-merge tokenizer keeps Llama-2's special, byte and action ids, spells OpenVLA's LIBERO-GOAL
prompts in ~20 tokens and any other text losslessly; the model sees 64 patch embeddings; written as an
OpenVLA directory it loads back through the package's loader with the same tokens and logits."""
import numpy as np
import pytest
import torch

from sim_bridge.constants import LIBERO_GOAL_INSTRUCTIONS
from spec_vla_ros.vla.checkpoint import write_checkpoint
from spec_vla_ros.vla.compact import FIRST_MERGED_ID, build_compact, build_compact_tokenizer
from spec_vla_ros.vla.constants import BOS_TOKEN_ID, EMPTY_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID
from spec_vla_ros.vla.miniature import build_miniature_tokenizer
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import build_prompt, prompt_token_ids
from spec_vla_ros.vla.session import VerifierSession
from spec_vla_ros.vla.verifiers import load_verifier


@pytest.fixture(scope="module")
def tokenizer():
    return build_compact_tokenizer()


def test_the_tokenizer_keeps_llamas_ids_and_merges_the_suites_words(tokenizer):
    vocab, byte_level = tokenizer.get_vocab(), build_miniature_tokenizer().get_vocab()
    assert all(vocab[piece] == index for piece, index in byte_level.items())       # specials, bytes, "▁", <PAD>
    new_ids = sorted(set(vocab.values()) - set(byte_level.values()))
    assert new_ids == list(range(FIRST_MERGED_ID, FIRST_MERGED_ID + len(new_ids)))
    assert new_ids[-1] < EMPTY_TOKEN_ID
    for instruction in LIBERO_GOAL_INSTRUCTIONS:
        ids = prompt_token_ids(tokenizer, instruction)
        words = len(build_prompt(instruction).split())
        assert ids[0] == BOS_TOKEN_ID and ids[-1] == EMPTY_TOKEN_ID
        assert len(ids) <= words + 8, (instruction, len(ids))       # a token per word, plus ": ? \n Out :" and BOS, ▁
        assert tokenizer.decode(ids[:-1], skip_special_tokens=True) == build_prompt(instruction)


def test_other_text_still_tokenizes_losslessly(tokenizer, rng):
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 ,.!?-'é€中")
    for _ in range(20):
        text = "".join(rng.choice(alphabet, int(rng.integers(1, 40))))
        if not text.strip():
            continue
        ids = tokenizer(build_prompt(text)).input_ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == build_prompt(text), text
        assert not {EOS_TOKEN_ID, PAD_TOKEN_ID} & set(ids) and max(ids) <= EMPTY_TOKEN_ID


def test_the_compact_model_round_trips_through_the_loader(tmp_path, rng):
    compact = build_compact()
    directory = write_checkpoint(compact, tmp_path / "compact", as_openvla=True)
    loaded = load_verifier(str(directory))
    instruction = LIBERO_GOAL_INSTRUCTIONS[7]
    ids = prompt_token_ids(loaded.tokenizer, instruction)
    assert ids == prompt_token_ids(compact.tokenizer, instruction)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    pixels = pixel_values(image, normalization=loaded.image_normalization)
    assert compact.model.embed_inputs(pixels[None], torch.tensor([ids])).shape[1] == len(ids) + 64
    expected = VerifierSession(compact.model).prefill(pixels, ids).logits
    torch.testing.assert_close(VerifierSession(loaded.model).prefill(pixels, ids).logits, expected, rtol=0, atol=0)
