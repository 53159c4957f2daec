"""Greedy decoding of OpenVLA's 7 action tokens: autoregressive, or speculative with a draft.

Speculative loop for one action (gpt-fast style, specialised to a fixed 7-token answer):
  1. the draft may guess the whole action before the prefill (history, carried state);
  2. prefill = vision + projector + language model over the prompt and those guesses;
  3. repeat until 7 tokens: the draft proposes up to `num_draft_tokens` tokens after the
     verifier's pending token; one verifier pass checks them; the longest prefix that passes
     the acceptance rule is kept, plus the verifier's own token at the first rejection (free);
     the KV cache and the draft roll back to the accepted prefix.
With `draft=None` this is plain autoregressive greedy decoding: 7 passes per action.
"""
from __future__ import annotations

import time

import torch

from ..drafts.base import Draft
from ..vla.constants import ACTION_DIM
from ..vla.model import OpenVLA
from ..vla.session import VerifierSession
from .acceptance import STRICT, Acceptance
from .stats import DecodeStats


class Decoder:
    def __init__(self, model: OpenVLA | None, draft: Draft | None = None, num_draft_tokens: int = 4,
                 acceptance: Acceptance = STRICT, session_factory=None):
        """`session_factory` (default: a VerifierSession over `model`) lets offline tools replay
        recorded verifier outputs through this same loop."""
        if draft is not None and (not isinstance(num_draft_tokens, int) or num_draft_tokens < 1):
            raise ValueError(f"num_draft_tokens must be an integer >= 1, got {num_draft_tokens!r}")
        self.new_session = session_factory or (lambda: VerifierSession(model))
        self.draft = draft
        self.num_draft_tokens = num_draft_tokens
        self.acceptance = acceptance

    @property
    def draft_name(self) -> str:
        return "none" if self.draft is None else self.draft.name

    def reset_episode(self) -> None:
        if self.draft is not None:
            self.draft.reset_episode()

    def decode(self, pixel_values: torch.Tensor, prompt_ids: list[int]) -> tuple[list[int], DecodeStats]:
        stats = DecodeStats(draft=self.draft_name, acceptance=self.acceptance.name)
        start = time.perf_counter()
        tokens = self._speculative(pixel_values, prompt_ids, stats) if self.draft else \
            self._autoregressive(pixel_values, prompt_ids, stats)
        stats.tokens = tokens
        stats.total_ms = (time.perf_counter() - start) * 1e3
        return tokens, stats

    def _autoregressive(self, pixel_values, prompt_ids, stats: DecodeStats) -> list[int]:
        session = self.new_session()
        with Timer(stats, "verify_ms"):
            tokens = [session.prefill(pixel_values, prompt_ids).greedy()[-1]]
            while len(tokens) < ACTION_DIM:
                tokens.append(session.extend(tokens[-1:]).greedy()[-1])
        stats.verifier_passes = session.passes
        return tokens

    def _speculative(self, pixel_values, prompt_ids, stats: DecodeStats) -> list[int]:
        draft, session = self.draft, self.new_session()
        with Timer(stats, "draft_ms"):
            early = draft.propose_early(ACTION_DIM)[:ACTION_DIM]
        with Timer(stats, "verify_ms"):
            step = session.prefill(pixel_values, prompt_ids, early)
        verifier_tokens = step.greedy()
        accepted = self.acceptance.accepted_prefix(early, verifier_tokens)
        tokens = early[:accepted] + verifier_tokens[accepted:accepted + 1]
        stats.proposed_per_pass.append(len(early))
        stats.accepted_per_pass.append(accepted)
        prompt_length = session.length - len(early)      # BOS, patches, prompt tokens
        session.truncate(prompt_length + accepted)
        with Timer(stats, "draft_ms"):
            draft.begin(step.hidden[:prompt_length], step.input_embeds[:prompt_length])
            if accepted:
                draft.accept(early[:accepted], step.hidden[prompt_length:prompt_length + accepted])

        while len(tokens) < ACTION_DIM:
            next_token = tokens[-1]
            with Timer(stats, "draft_ms"):
                proposals = draft.propose(next_token, min(self.num_draft_tokens, ACTION_DIM - len(tokens) - 1))
            with Timer(stats, "verify_ms"):
                step = session.extend([next_token] + proposals)
            verifier_tokens = step.greedy()
            accepted = self.acceptance.accepted_prefix(proposals, verifier_tokens, len(tokens))
            tokens += proposals[:accepted] + verifier_tokens[accepted:accepted + 1]
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


class Timer:
    """Adds the wall time of a `with` block, in ms, to a DecodeStats field."""

    def __init__(self, stats: DecodeStats, field: str):
        self.stats, self.field = stats, field

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        elapsed = (time.perf_counter() - self.start) * 1e3
        setattr(self.stats, self.field, getattr(self.stats, self.field) + elapsed)
