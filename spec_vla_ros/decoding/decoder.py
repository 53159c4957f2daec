"""Greedy decoding of OpenVLA's 7 action tokens: autoregressive, or speculative with a draft.

Speculative loop for one action (gpt-fast style, specialised to a fixed 7-token answer):
  1. the draft may guess the whole action before the prefill (history, carried state);
  2. prefill = vision + projector + language model over the prompt and those guesses;
  3. repeat until 7 tokens: the draft proposes up to `num_draft_tokens` tokens after the
     verifier's pending token; one verifier pass checks them; the longest prefix that passes
     the acceptance rule is kept, plus the verifier's own token at the first rejection (free);
     the KV cache and the draft roll back to the accepted prefix.
With `draft=None` this is plain autoregressive greedy decoding: 7 passes per action (fewer
after an EOS). Strict acceptance gives AR's tokens up to near-ties: see acceptance.LOSSLESS_CLAIM.

Stopping follows OpenVLA's `predict_action`: `generate(max_new_tokens=7)` stops after an EOS
(id 2), and the action is read from the last 7 ids of prompt + output. When the verifier
emits EOS as token i < 6, the action's first 6 - i "tokens" are the prompt's last ids (e.g.
"Out", ":", 29871), decoded through the clip in `token_ids_to_bin_indices` like any other id.
Both decoders stop there; a draft's proposals past an EOS are never kept.
"""
from __future__ import annotations

import time

import torch

from ..drafts.base import Draft
from ..drafts.kinds import AR
from ..vla.constants import ACTION_DIM, EOS_TOKEN_ID
from ..vla.model import OpenVLA
from ..vla.session import VerifierSession, VerifierStep
from .acceptance import STRICT, Acceptance
from .stats import DecodeStats


class Decoder:
    def __init__(self, model: OpenVLA | None, draft: Draft | None = None, num_draft_tokens: int = 4,
                 acceptance: Acceptance = STRICT, session_factory=None, draft_checkpoint: str = ""):
        """`session_factory` (default: a VerifierSession over `model`) lets offline tools replay
        recorded verifier outputs through this same loop. `draft_checkpoint`: the directory the
        draft head was loaded from ('' for none), copied into every DecodeStats."""
        if draft is not None and (not isinstance(num_draft_tokens, int) or num_draft_tokens < 1):
            raise ValueError(f"num_draft_tokens must be an integer >= 1, got {num_draft_tokens!r}")
        self.new_session = session_factory or (lambda: VerifierSession(model))
        self.draft = draft
        self.num_draft_tokens = num_draft_tokens
        self.acceptance = acceptance
        self.draft_checkpoint = draft_checkpoint

    @property
    def draft_name(self) -> str:
        return AR if self.draft is None else self.draft.name

    def reset_episode(self) -> None:
        if self.draft is not None:
            self.draft.reset_episode()

    def decode(self, pixel_values: torch.Tensor, prompt_ids: list[int]) -> tuple[list[int], DecodeStats]:
        """-> the 7 token ids the action is read from (OpenVLA's last 7 ids of prompt + output), and
        the statistics (`stats.generated`: the verifier's output itself, ending with EOS if it stopped)."""
        stats = DecodeStats(draft=self.draft_name, acceptance=self.acceptance.name,
                            draft_checkpoint=self.draft_checkpoint)
        start = time.perf_counter()
        generated = self._speculative(pixel_values, prompt_ids, stats) if self.draft else \
            self._autoregressive(pixel_values, prompt_ids, stats)
        stats.generated = generated
        stats.tokens = action_token_ids(prompt_ids, generated)
        stats.total_ms = (time.perf_counter() - start) * 1e3
        return stats.tokens, stats

    def _autoregressive(self, pixel_values, prompt_ids, stats: DecodeStats) -> list[int]:
        session = self.new_session()
        with Timer(stats, "verify_ms"):
            tokens = [session.prefill(pixel_values, prompt_ids).greedy()[-1]]
            while not finished(tokens):
                tokens.append(session.extend(tokens[-1:]).greedy()[-1])
        stats.verifier_passes = session.passes
        return tokens

    def _speculative(self, pixel_values, prompt_ids, stats: DecodeStats) -> list[int]:
        draft, session = self.draft, self.new_session()
        with Timer(stats, "draft_ms"):
            early = draft.propose_early(ACTION_DIM)[:ACTION_DIM]
        with Timer(stats, "verify_ms"):              # the verifier's logits are read while judging
            step = session.prefill(pixel_values, prompt_ids, early)
            accepted, tokens = self._judge(early, step, 0)
        stats.proposed_per_pass.append(len(early))
        stats.accepted_per_pass.append(accepted)
        prompt_length = session.length - len(early)      # BOS, patches, prompt tokens
        session.truncate(prompt_length + accepted)
        with Timer(stats, "draft_ms"):
            draft.begin(step.hidden[:prompt_length], step.input_embeds[:prompt_length])
            if accepted:
                draft.accept(early[:accepted], step.hidden[prompt_length:prompt_length + accepted])

        while not finished(tokens):
            next_token = tokens[-1]
            with Timer(stats, "draft_ms"):
                proposals = draft.propose(next_token, min(self.num_draft_tokens, ACTION_DIM - len(tokens) - 1))
            with Timer(stats, "verify_ms"):
                step = session.extend([next_token] + proposals)
                accepted, new_tokens = self._judge(proposals, step, len(tokens))
            tokens += new_tokens
            stats.proposed_per_pass.append(len(proposals))
            stats.accepted_per_pass.append(accepted)
            session.truncate(session.length - len(proposals) + accepted)
            with Timer(stats, "draft_ms"):
                draft.accept([next_token] + proposals[:accepted], step.hidden[:1 + accepted])
        tokens = tokens[:ACTION_DIM]
        with Timer(stats, "draft_ms"):
            draft.end_action(tokens)
        stats.verifier_passes = session.passes
        return tokens

    def _judge(self, proposals: list[int], step: VerifierStep, start: int) -> tuple[int, list[int]]:
        """(proposals kept, tokens this pass adds): the accepted prefix plus the verifier's own token
        after it, cut after the 7th token of the action and after an EOS (generate stops there).
        The verifier's tokens after the first are read only when the first proposal passes (most
        are rejected; on the CPU each logits row costs a read of the whole lm_head)."""
        verifier_tokens = step.greedy(0, 1)
        if proposals and self.acceptance.accepts(proposals[0], verifier_tokens[0], start):
            verifier_tokens += step.greedy(1)
        accepted = self.acceptance.accepted_prefix(proposals, verifier_tokens, start)
        new_tokens = until_eos((proposals[:accepted] + verifier_tokens[accepted:accepted + 1])[:ACTION_DIM - start])
        return min(accepted, len(new_tokens)), new_tokens


def until_eos(tokens: list[int]) -> list[int]:
    """`tokens` up to and including the first EOS."""
    return tokens[:tokens.index(EOS_TOKEN_ID) + 1] if EOS_TOKEN_ID in tokens else tokens


def finished(tokens: list[int]) -> bool:
    """OpenVLA's `generate(max_new_tokens=7)` stops after 7 tokens or an EOS."""
    return len(tokens) >= ACTION_DIM or (bool(tokens) and tokens[-1] == EOS_TOKEN_ID)


def action_token_ids(prompt_ids: list[int], generated: list[int]) -> list[int]:
    """OpenVLA's `predict_action`: the action is read from the last 7 ids of prompt + output
    (the prompt's tail when the output stopped at an early EOS). Every OpenVLA prompt is longer
    than 6 ids; replays that pass no prompt get fewer ids only when the output stopped early."""
    return (list(prompt_ids) + list(generated))[-ACTION_DIM:]


class Timer:
    """Adds the wall time of a `with` block, in ms, to a DecodeStats field."""

    def __init__(self, stats: DecodeStats, field: str):
        self.stats, self.field = stats, field

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        elapsed = (time.perf_counter() - self.start) * 1e3
        setattr(self.stats, self.field, getattr(self.stats, self.field) + elapsed)
