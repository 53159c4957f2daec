"""Acceptance rules: when does a drafted token pass the verifier's check?"""
from __future__ import annotations

from dataclasses import dataclass

from ..vla.action_tokenizer import is_action_token, token_ids_to_actions
from ..vla.constants import ACTION_DIM, GRIPPER_OPEN_ABOVE

GRIPPER_POSITION = ACTION_DIM - 1


def gripper_opens(token_id: int) -> bool:
    """Whether the harness would open the gripper for this token (OpenVLA's [0, 1], 1 = open)."""
    return bool(token_ids_to_actions(token_id) > GRIPPER_OPEN_ABOVE)


@dataclass(frozen=True)
class Acceptance:
    """Strict (threshold 0): the draft token must equal the verifier's argmax, so the output is
    bit-identical to greedy decoding. Relaxed (Spec-VLA): a draft action token within
    `threshold` bins of the verifier's is kept. Open and close gripper bins are 128 apart, so a
    threshold below that never flips a trained policy's gripper; a gripper token near the
    open/close boundary (possible for any policy) is also only kept on the verifier's side."""

    threshold: int = 0

    def __post_init__(self):
        if not isinstance(self.threshold, int) or self.threshold < 0:
            raise ValueError(f"relaxed acceptance threshold must be an integer >= 0, got {self.threshold!r}")

    @classmethod
    def from_name(cls, acceptance: str, relaxed_threshold: int = 0) -> "Acceptance":
        if acceptance == "strict":
            return cls(0)
        if acceptance == "relaxed":
            return cls(relaxed_threshold)
        raise ValueError(f"acceptance '{acceptance}' is unknown; expected 'strict' or 'relaxed'")

    @property
    def name(self) -> str:
        return "strict" if self.threshold == 0 else f"relaxed:{self.threshold}"

    def accepts(self, draft_token: int, verifier_token: int, position: int | None = None) -> bool:
        """`position`: index of the token in the action (GRIPPER_POSITION is the gripper)."""
        if draft_token == verifier_token:
            return True
        return (self.threshold > 0 and is_action_token(draft_token) and is_action_token(verifier_token)
                and abs(draft_token - verifier_token) <= self.threshold
                and (position != GRIPPER_POSITION or gripper_opens(draft_token) == gripper_opens(verifier_token)))

    def accepted_prefix(self, proposals: list[int], verifier_tokens: list[int], start: int = 0) -> int:
        """How many leading proposals pass, each judged against the verifier's token at its position
        (the first proposal is token `start` of the action)."""
        for count, (draft_token, verifier_token) in enumerate(zip(proposals, verifier_tokens)):
            if not self.accepts(draft_token, verifier_token, start + count):
                return count
        return len(proposals)


STRICT = Acceptance(0)
