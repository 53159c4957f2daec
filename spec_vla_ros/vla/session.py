"""VerifierSession: the verifier's KV cache for one action, with prefill / extend / truncate.

A verifier *pass* is one forward of the language model over new positions. Decoders (AR or
speculative) drive a session; drafts read the hidden states and input embeddings it returns.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from .model import OpenVLA


class VerifierStep:
    """Outputs of one verifier pass over `n` new positions.

    logits:       [k, vocab] for the last k positions (k = 1 + number of proposals verified)
    hidden:       [n, H] last-layer hidden states (after the final norm: lm_head(hidden) = logits)
    input_embeds: [n, H] the embeddings fed at those positions

    Built with `lm_head_weight` instead of `logits` (the CPU path of VerifierSession), the logits are
    computed from the last k rows of `hidden` when read, and `greedy(start, stop)` computes only the
    rows it is asked for, in blocks of at least two (`lm_head_logits` reads the head once for either)
    kept for later calls: a speculative decoder needs the rows after a rejected proposal only when
    that proposal was accepted, and on the CPU each block costs a full read of the 32064-row head.
    """

    def __init__(self, hidden: torch.Tensor, input_embeds: torch.Tensor, logits: torch.Tensor | None = None,
                 lm_head_weight: torch.Tensor | None = None, num_logits: int = 0):
        if (logits is None) == (lm_head_weight is None):
            raise ValueError("VerifierStep needs exactly one of logits or lm_head_weight")
        self.hidden, self.input_embeds = hidden, input_embeds
        self._logits, self.lm_head_weight = logits, lm_head_weight
        self.num_logits = num_logits if logits is None else logits.shape[0]
        self._greedy: dict[int, int] = {}           # logits row -> argmax, for rows computed lazily

    @property
    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            self._logits = lm_head_logits(self.lm_head_weight, self.hidden[self.hidden.shape[0] - self.num_logits:])
        return self._logits

    @torch.inference_mode()
    def greedy(self, start: int = 0, stop: int | None = None) -> list[int]:
        """The argmax of logits rows start..stop-1 (all by default); an exact tie goes to the lowest id
        (torch.argmax returns the first)."""
        stop = self.num_logits if stop is None else min(stop, self.num_logits)
        if self._logits is not None:
            return self._logits[start:stop].argmax(dim=-1).tolist()
        missing = [row for row in range(start, stop) if row not in self._greedy]
        if missing:
            first, end = missing[0], min(max(missing[-1] + 1, missing[0] + 2), self.num_logits)
            offset = self.hidden.shape[0] - self.num_logits
            rows = lm_head_logits(self.lm_head_weight, self.hidden[offset + first:offset + end])
            self._greedy.update(zip(range(first, end), rows.argmax(dim=-1).tolist()))
        return [self._greedy[row] for row in range(start, stop)]

    def top2_margins(self) -> list[float]:
        """Per row, the largest logit minus the second largest (0.0 at an exact tie): how far the
        greedy choice is from flipping. Float32 logits of one position move by ~1e-5 between
        passes of different shapes (see decoding.acceptance.LOSSLESS_CLAIM)."""
        top = self.logits.float().topk(2, dim=-1).values
        return (top[:, 0] - top[:, 1]).tolist()


class VerifierSession:
    def __init__(self, model: OpenVLA):
        self.model = model
        self.cache: DynamicCache | None = None
        self.passes = 0

    @property
    def length(self) -> int:
        return 0 if self.cache is None else self.cache.get_seq_length()

    @torch.inference_mode()
    def prefill(self, pixel_values: torch.Tensor, prompt_ids: list[int], proposals: list[int] = ()) -> VerifierStep:
        """Image + prompt (+ optional proposed action tokens, verified in the same pass)."""
        device = self.model.projector.fc1.weight.device
        ids = torch.tensor([list(prompt_ids) + list(proposals)], device=device)
        embeds = self.model.embed_inputs(pixel_values.unsqueeze(0).to(device), ids)
        self.cache = DynamicCache()
        return self._forward(embeds, num_logits=1 + len(proposals))

    @torch.inference_mode()
    def extend(self, token_ids: list[int]) -> VerifierStep:
        """Append tokens to the cache; logits for every one of them (the next-token predictions)."""
        if self.cache is None:
            raise RuntimeError("extend() before prefill()")
        ids = torch.tensor([list(token_ids)], device=self.model.projector.fc1.weight.device)
        return self._forward(self.model.embed_tokens(ids), num_logits=len(token_ids))

    def truncate(self, length: int) -> None:
        """Roll the KV cache back to its first `length` positions (rejected proposals)."""
        if length < self.length:
            self.cache.crop(length - self.length)       # transformers 5: a negative count removes tokens

    def _forward(self, embeds: torch.Tensor, num_logits: int) -> VerifierStep:
        language_model = self.model.language_model
        out = language_model.model(inputs_embeds=embeds, cache=self.cache, use_cache=True)
        self.passes += 1
        hidden, weight = out.last_hidden_state[0], language_model.lm_head.weight
        if weight.device.type == "cpu":             # rows computed when the decoder asks for them
            return VerifierStep(hidden, embeds[0], lm_head_weight=weight, num_logits=num_logits)
        return VerifierStep(hidden, embeds[0], logits=lm_head_logits(weight, hidden[-num_logits:]))


def lm_head_logits(weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """[vocab, H] lm_head weight, [n, H] hidden states -> [n, vocab] float32 logits.

    The same product as `lm_head(hidden)`. On the CPU, PyTorch's fp32 `linear` against the
    32064-row head is slow for a few rows (miniature, one thread: 3.7 ms for 1 row, 7.7 for 2, 11.5
    for 3, 6.7 for 5), while `weight @ hidden.T` reads the weight once for any number of rows from
    two on (1.6 ms for 2 rows, 2.3 for 3, 3.2 for 5); a single row is computed as two (itself,
    twice) to stay on that path. Every pass, whatever its length, so uses one kernel for its
    logits. On CUDA, `linear` as it is."""
    if weight.device.type != "cpu":
        return torch.nn.functional.linear(hidden, weight).float()
    rows = hidden if hidden.shape[0] > 1 else hidden.repeat(2, 1)
    return (weight @ rows.T).T[:hidden.shape[0]].float()
