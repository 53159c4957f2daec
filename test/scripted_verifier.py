"""A verifier whose greedy choices are scripted, for decoding tests that must be exact.

`ScriptedSession` has the VerifierSession API (prefill / extend / truncate / length / passes)
and serves, for every position, one-hot logits at the token `next_token(prefix)` picks from
the action tokens fed so far. Hidden states and input embeddings are seeded random tensors of
the model's width, so the real drafts (mamba, llama, history) can run on it. No floating-point
noise enters the choices: strict speculative decoding must reproduce AR exactly here.
"""
from __future__ import annotations

import zlib

import torch

from spec_vla_ros.vla.constants import ACTION_TOKEN_MIN, EOS_TOKEN_ID, PADDED_VOCAB_SIZE
from spec_vla_ros.vla.session import VerifierStep


def off_script_token(prefix: list[int]) -> int:
    """A deterministic action token for prefixes the script does not cover."""
    return ACTION_TOKEN_MIN + zlib.crc32(repr(prefix).encode()) % 256


class Script:
    """Greedy choices: `truth` (which may contain EOS) after its own prefixes, `off_script_token`
    after any other prefix (a relaxed rule kept a different token). `positional`: truth[i] at
    token i whatever came before."""

    def __init__(self, truth: list[int], positional: bool = False):
        self.truth, self.positional = list(truth), positional

    def next_token(self, prefix: list[int]) -> int:
        follows = self.positional or prefix == self.truth[:len(prefix)]
        if follows and len(prefix) < len(self.truth):
            return self.truth[len(prefix)]
        if EOS_TOKEN_ID in prefix or len(prefix) >= len(self.truth):
            return EOS_TOKEN_ID          # nothing the decoder may read
        return off_script_token(prefix)


class ScriptedSession:
    PROMPT_LENGTH = 12

    def __init__(self, script: Script, hidden_size: int, dtype=torch.float32, seed: int = 0):
        self.script, self.hidden_size, self.dtype = script, hidden_size, dtype
        self.generator = torch.Generator().manual_seed(seed)
        self.fed: list[int] = []
        self.passes = 0
        self.prefilled = False

    @property
    def length(self) -> int:
        return self.PROMPT_LENGTH + len(self.fed) if self.prefilled else 0

    def prefill(self, pixel_values, prompt_ids, proposals=()) -> VerifierStep:
        self.prefilled, self.fed = True, list(proposals)
        return self._step(self.PROMPT_LENGTH + len(self.fed), first_prefix=0)

    def extend(self, token_ids: list[int]) -> VerifierStep:
        start = len(self.fed)
        self.fed += list(token_ids)
        return self._step(len(token_ids), first_prefix=start + 1)

    def truncate(self, length: int) -> None:
        del self.fed[max(0, length - self.PROMPT_LENGTH):]

    def _step(self, positions: int, first_prefix: int) -> VerifierStep:
        """Logits for the prefixes fed[:first_prefix] .. fed[:len(fed)]."""
        self.passes += 1
        chosen = [self.script.next_token(self.fed[:end]) for end in range(first_prefix, len(self.fed) + 1)]
        logits = torch.zeros(len(chosen), PADDED_VOCAB_SIZE)
        logits[torch.arange(len(chosen)), torch.tensor(chosen)] = 1.0
        noise = lambda: torch.randn(positions, self.hidden_size, generator=self.generator).to(self.dtype)
        return VerifierStep(logits=logits, hidden=noise(), input_embeds=noise())
