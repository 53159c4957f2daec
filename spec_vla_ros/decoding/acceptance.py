"""Acceptance rules: when does a drafted token pass the verifier's check?

Three named rules (the `acceptance` parameter, the configuration syntax `KIND:RULE[:THRESHOLD]` of
decoding/spec.py):

- `strict`: the draft token must equal the verifier's argmax. Speculative decoding then yields
  greedy decoding's tokens up to near-tied argmaxes; see `LOSSLESS_CLAIM` for what holds.
- `relaxed` (Spec-VLA, EMNLP 2025, `evaluate_posterior` in their prismatic/extern/hf/utils.py):
  a draft token with `|draft id - verifier id| <= threshold` is accepted and kept, nothing else
  is checked. This is the rule behind the paper's numbers, so a comparison with it is like for like.
- `relaxed-guarded`: the relaxed rule, and also both ids must be action tokens and, for the
  gripper token, on the same side of the open/close boundary. Open and close gripper bins are
  128 apart, so a threshold below that never flips a trained policy's gripper; a gripper token
  near the boundary (possible for any policy) is only kept on the verifier's side.

A relaxed rule with threshold 0 is strict (and is named `strict`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..vla.action_tokenizer import is_action_token
from ..vla.constants import ACTION_DIM
from ..vla.gripper import gripper_opens

GRIPPER_POSITION = ACTION_DIM - 1
DEFAULT_RELAXED_THRESHOLD = 9       # Spec-VLA's relaxed acceptance
# Strict speculative decoding reproduces AR's token wherever the verifier's top-2 logit margin
# exceeds this (float32): passes of other shapes move a logit by at most 1.8e-5 (measured on the
# miniature, CPU, logits of magnitude ~4), so a flip needs a margin below ~4e-5.
STRICT_TIE_TOLERANCE_FP32 = 1e-4
STRICT_RULE, RELAXED_RULE, GUARDED_RULE = "strict", "relaxed", "relaxed-guarded"
RULES = (STRICT_RULE, RELAXED_RULE, GUARDED_RULE)
RULE_DESCRIPTIONS = {
    STRICT_RULE: "draft id == verifier id (greedy decoding's tokens up to near-ties)",
    RELAXED_RULE: "|draft id - verifier id| <= threshold, draft token kept (Spec-VLA's exact rule)",
    GUARDED_RULE: "relaxed, and both ids action tokens, and the gripper token on the verifier's open/close side",
}
LOSSLESS_CLAIM = (
    "Strict acceptance gives autoregressive greedy decoding's tokens wherever the verifier's top-2 logit "
    f"margin exceeds {STRICT_TIE_TOLERANCE_FP32:g} (float32) at every position; at the first position where "
    "it does not, the token may be another of the near-tied ones (within that margin of AR's maximum), and "
    "the rest of the action follows from it. Cause: a verifier pass over more positions runs other kernel "
    "shapes and moves float32 logits by up to ~2e-5, so no deterministic tie-break can make passes of "
    "different shapes agree on every near-tie; bf16 moves them further. Reports give the share of actions "
    "identical to AR beside AR's own noise floor (AR with every verifier pass one position longer).")


@dataclass(frozen=True)
class Acceptance:
    """`threshold` 0 is strict; above 0, Spec-VLA's relaxed rule, or the guarded one if `guarded`."""

    threshold: int = 0
    guarded: bool = False

    def __post_init__(self):
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 0:
            raise ValueError(f"relaxed acceptance threshold must be an integer >= 0, got {self.threshold!r}")

    @classmethod
    def from_name(cls, acceptance: str, relaxed_threshold: int = 0) -> "Acceptance":
        """`strict`, `relaxed` or `relaxed-guarded`; ValueError naming the choices otherwise."""
        if acceptance == STRICT_RULE:
            return cls(0)
        if acceptance in (RELAXED_RULE, GUARDED_RULE):
            return cls(relaxed_threshold, guarded=acceptance == GUARDED_RULE)
        raise ValueError(f"acceptance '{acceptance}' is unknown; expected one of {', '.join(RULES)}")

    @property
    def rule(self) -> str:
        if self.threshold == 0:
            return STRICT_RULE
        return GUARDED_RULE if self.guarded else RELAXED_RULE

    @property
    def name(self) -> str:
        """`strict`, `relaxed:T` or `relaxed-guarded:T` (what reports and decode_stats print)."""
        return STRICT_RULE if self.threshold == 0 else f"{self.rule}:{self.threshold}"

    def __eq__(self, other) -> bool:
        return isinstance(other, Acceptance) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def accepts(self, draft_token: int, verifier_token: int, position: int | None = None) -> bool:
        """`position`: index of the token in the action (GRIPPER_POSITION is the gripper)."""
        if draft_token == verifier_token:
            return True
        if self.threshold == 0 or abs(draft_token - verifier_token) > self.threshold:
            return False
        if not self.guarded:
            return True
        return (is_action_token(draft_token) and is_action_token(verifier_token)
                and (position != GRIPPER_POSITION or gripper_opens(draft_token) == gripper_opens(verifier_token)))

    def accepted_prefix(self, proposals: list[int], verifier_tokens: list[int], start: int = 0) -> int:
        """How many leading proposals pass, each judged against the verifier's token at its position
        (the first proposal is token `start` of the action)."""
        for count, (draft_token, verifier_token) in enumerate(zip(proposals, verifier_tokens)):
            if not self.accepts(draft_token, verifier_token, start + count):
                return count
        return len(proposals)


STRICT = Acceptance(0)
