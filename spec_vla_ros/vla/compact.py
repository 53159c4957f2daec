"""The compact OpenVLA: the architecture at the size the embedded default is to be trained at
(issue #23 item 4), next to the seeded miniature (vla/miniature.py), which stays as it is.

The same code and key layout as OpenVLA-7B and the miniature (two ViT kinds with their second-to-
last block's patch tokens fused, the GELU projector, Llama with the real 32064-entry vocabulary and
action ids, the 224 px harness image path), sized so that fine-tuning fits a 2-core laptop:

- patch size 28 at 224 px: 64 patch embeddings instead of 256 (the language model's sequence is
  what training pays for);
- a word-level tokenizer: the miniature's byte-level vocabulary (Llama-2's special and byte-fallback
  ids) plus BPE merges that spell every word of OpenVLA's prompt and of the LIBERO-GOAL
  instructions as one token, so the prompt is ~20 tokens instead of ~74 (any other text still
  tokenizes, character by character);
- widths and depths of the miniature, the ViTs a little wider (a 28 px patch holds 4x the pixels).

Built from a seed with random weights, it is the starting point of `spec-vla-finetune --init
compact`; what is trained (everything, or the vision towers frozen with cached features) is the
fine-tuning's `--train` choice.
"""
from __future__ import annotations

import re

import torch
from tokenizers import models
from transformers import PreTrainedTokenizerFast

from .action_tokenizer import LIBERO_GOAL_STATS
from .checkpoint import LoadedVerifier
from .constants import DEFAULT_UNNORM_KEY, PAD_TOKEN_ID, PADDED_VOCAB_SIZE, PROMPT_TEMPLATE
from .model import OpenVLA, VLAConfig
from .prompt import build_miniature_tokenizer

COMPACT = "compact"                      # what `spec-vla-finetune --init` calls it
COMPACT_SEED = 0
COMPACT_PATCH_SIZE = 28                  # (224 / 28)^2 = 64 patch embeddings
COMPACT_TEXT_CONFIG = {
    "vocab_size": PADDED_VOCAB_SIZE, "pad_token_id": PAD_TOKEN_ID, "hidden_size": 256,
    "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}
COMPACT_VISION_OVERRIDES = (
    # DINOv2 kind: registers, LayerScale, patch-only position embeddings
    {"patch_size": COMPACT_PATCH_SIZE, "embed_dim": 128, "depth": 4, "num_heads": 4, "init_values": 0.1,
     "reg_tokens": 4, "no_embed_class": True},
    # SigLIP kind: no class token, attention-pool (MAP) head
    {"patch_size": COMPACT_PATCH_SIZE, "embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 3.7362,
     "class_token": False, "global_pool": "map"},
)
FIRST_MERGED_ID = 259                    # after <unk> <s> </s> and the 256 byte tokens, as in Llama-2
SPACE = "\u2581"                         # sentencepiece's word boundary "▁"
WORD = re.compile(f"{SPACE}?[A-Za-z]+")


def compact_config() -> VLAConfig:
    return VLAConfig(text_config=dict(COMPACT_TEXT_CONFIG), vision_overrides=COMPACT_VISION_OVERRIDES)


def tokenizer_words(texts) -> list[str]:
    """The words of `texts` as the tokenizer's normalizer leaves them ("▁" before each word that
    follows a space or starts the text), in first-seen order."""
    words = {}
    for text in texts:
        for word in WORD.findall(SPACE + text.replace(" ", SPACE)):
            words.setdefault(word, None)
    return list(words)


def build_word_tokenizer(texts) -> PreTrainedTokenizerFast:
    """The miniature's byte-level tokenizer (vla/prompt.py) plus, for every word of `texts`, its
    characters and left-to-right merges (`▁b o w l` -> `▁b`, `▁bo`, `▁bow`, `▁bowl`), so each such
    word is one token. New ids start at FIRST_MERGED_ID, far below Llama-2's "▁" (29871), its
    action ids and <PAD>, which keep their places."""
    tokenizer = build_miniature_tokenizer()
    backend = tokenizer.backend_tokenizer
    vocab = dict(backend.get_vocab())
    words = tokenizer_words(texts)
    pieces = sorted({char for word in words for char in word} - set(vocab))
    merges = []
    for word in words:
        for end in range(2, len(word) + 1):
            merged = word[:end]
            if merged not in vocab and merged not in pieces:
                pieces.append(merged)
                merges.append((word[:end - 1], word[end - 1]))
    vocab.update({piece: FIRST_MERGED_ID + index for index, piece in enumerate(pieces)})
    backend.model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<PAD>")


def build_compact_tokenizer() -> PreTrainedTokenizerFast:
    """Word merges for OpenVLA's prompt and the LIBERO-GOAL suite's instructions."""
    from sim_bridge.constants import LIBERO_GOAL_INSTRUCTIONS      # plain values, no simulator

    return build_word_tokenizer((PROMPT_TEMPLATE.format(instruction=""), *LIBERO_GOAL_INSTRUCTIONS))


def build_compact(seed: int = COMPACT_SEED) -> LoadedVerifier:
    """The compact OpenVLA with seeded random weights (fp32, CPU): fine-tuning's starting point. Its
    statistics are the published LIBERO-GOAL ones until fine-tuning writes the dataset's own."""
    from .miniature import MINIATURE_NORMALIZATION

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLA(compact_config()).eval()
    return LoadedVerifier(model, build_compact_tokenizer(), {DEFAULT_UNNORM_KEY: LIBERO_GOAL_STATS.to_json_entry()},
                          f"{COMPACT}-seed{seed}", MINIATURE_NORMALIZATION)
