"""AR's own noise floor: how often greedy decoding disagrees with itself when only the shape of a
verifier pass changes.

A verifier pass over more positions runs other kernel shapes, which moves float32 logits by
~1e-5 (measured on the miniature, CPU: at most 1.8e-5 at logits of magnitude ~4), enough to flip
an argmax whose top-2 margin is below it. Speculative decoding verifies tokens in such longer
passes, so "same actions as AR" below 100 % under strict acceptance is expected wherever the
verifier has near-ties; how far below is bounded by AR's own disagreement with a reshaped AR.

The reshaped AR is strict speculative decoding with `ReshapedPasses`, a stand-in draft that
proposes one placeholder token to every pass (before the prefill, and after each token but the
last): each of AR's passes then runs over one position more, as speculative passes do, the
placeholder's row is discarded, and strict acceptance keeps only the verifier's own choices (the
placeholder is kept only where it *is* the verifier's argmax). Its tokens are therefore greedy
decoding's, computed in passes of other shapes: any difference from plain AR is numerical
noise, not a decoding difference.
"""
from __future__ import annotations

from ..drafts.base import Draft
from ..vla.constants import PAD_TOKEN_ID
from .acceptance import STRICT
from .decoder import Decoder

RESHAPED_AR = "ar-reshaped"
PLACEHOLDER_TOKEN_ID = PAD_TOKEN_ID      # not a token OpenVLA answers with


class ReshapedPasses(Draft):
    """Proposes one placeholder token to every pass (see the module doc)."""

    name = RESHAPED_AR

    def propose_early(self, k: int) -> list[int]:
        return [PLACEHOLDER_TOKEN_ID][:k]

    def propose(self, next_token: int, k: int) -> list[int]:
        return [PLACEHOLDER_TOKEN_ID][:k]


def reshaped_ar_decoder(model, session_factory=None) -> Decoder:
    """Greedy decoding with every verifier pass one position longer than AR's."""
    return Decoder(model, ReshapedPasses(), 1, STRICT, session_factory)


def same_share(tokens: list[list[int]], reference: list[list[int]]) -> float | None:
    """Share of actions whose token ids equal the reference's (None for no actions)."""
    if len(tokens) != len(reference):
        raise ValueError(f"cannot compare {len(tokens)} actions with {len(reference)} reference actions")
    return sum(list(a) == list(b) for a, b in zip(tokens, reference)) / len(tokens) if tokens else None
