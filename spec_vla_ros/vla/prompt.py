"""OpenVLA's prompt, and the offline tokenizer of the embedded miniature.

Real checkpoints ship Llama-2's tokenizer (`checkpoint.load_tokenizer`). The miniature
needs a tokenizer that can be built without a download: `build_miniature_tokenizer` makes a
byte-level one with Llama-2's special ids (<unk> 0, <s> 1, </s> 2, bytes <0x00>..<0xFF> at
3..258 exactly where Llama-2 keeps its byte-fallback tokens, "▁" at 29871, <PAD> 32000).
It is a real `tokenizers` tokenizer, saved into the miniature's checkpoint directory and
loaded back through the same path as a real checkpoint's.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, processors
from transformers import PreTrainedTokenizerFast

from .constants import (BOS_TOKEN_ID, EMPTY_TOKEN_ID, EOS_TOKEN_ID, MAX_INSTRUCTION_CHARS, PAD_TOKEN_ID,
                        PROMPT_TEMPLATE)


def build_prompt(instruction: str) -> str:
    """OpenVLA's prompt for `instruction`, lowercased and otherwise as given (OpenVLA does not
    strip it: surrounding spaces reach the tokenizer). Raises ValueError for a non-str, an empty
    or all-whitespace instruction, or one longer than MAX_INSTRUCTION_CHARS."""
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
    if not instruction.strip():
        raise ValueError("instruction is empty; expected a task description such as 'open the top drawer of the cabinet'")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f"instruction has {len(instruction)} characters, expected at most {MAX_INSTRUCTION_CHARS}")
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


def prompt_token_ids(tokenizer, instruction: str) -> list[int]:
    """Token ids of the prompt, starting with BOS and ending with 29871 as OpenVLA's `predict_action`:
    the id is appended whenever the tokenized prompt does not already end with it, whatever the
    tokenizer's vocabulary (the model's embedding has the row). Raises ValueError without BOS."""
    ids = list(tokenizer(build_prompt(instruction)).input_ids)
    if ids[0] != BOS_TOKEN_ID:
        raise ValueError(f"tokenizer did not add BOS (id {BOS_TOKEN_ID}); got first id {ids[0]}")
    if ids[-1] != EMPTY_TOKEN_ID:
        ids.append(EMPTY_TOKEN_ID)
    return ids


def build_miniature_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": BOS_TOKEN_ID, "</s>": EOS_TOKEN_ID}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    vocab["▁"] = EMPTY_TOKEN_ID
    vocab["<PAD>"] = PAD_TOKEN_ID
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS_TOKEN_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<PAD>")
