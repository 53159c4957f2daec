"""History draft: propose the previous action's tokens, at no model cost.

Robot actions change slowly from one control step to the next, so the last action of the same
episode is a free guess for the whole next action (verified by the prefill pass), and its
remaining tokens are a guess for the rest of an action once some tokens are known.
"""
from __future__ import annotations

from ..vla.constants import ACTION_DIM
from .base import Draft
from .tree import HISTORY


class HistoryDraft(Draft):
    """One branch in a tree: the previous action's remaining tokens (the default chain)."""

    name = "history"
    source = early_source = HISTORY

    def __init__(self):
        self.previous: list[int] = []
        self.produced: list[int] = []

    def reset_episode(self) -> None:
        self.previous = []

    def propose_early(self, k: int) -> list[int]:
        self.produced = []
        return self.previous[:k]

    def begin(self, hidden, input_embeds) -> None:
        self.produced = []

    def propose(self, next_token: int, k: int) -> list[int]:
        start = len(self.produced) + 1          # next_token takes the position after those produced
        return self.previous[start:start + k]

    def accept(self, tokens: list[int], hidden) -> None:
        self.produced.extend(tokens)

    def end_action(self, tokens: list[int]) -> None:
        self.previous = list(tokens[:ACTION_DIM])
