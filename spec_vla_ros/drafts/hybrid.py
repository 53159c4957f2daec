"""The hybrid tree: one token tree under one node budget from three sources -- a model draft's best
branches, the previous action (history) and continuations retrieved from earlier action-token
sequences (drafts/retrieval.py) -- so a pass can keep whichever of them the verifier agrees with.

Every candidate path gets a log-probability estimate and the tree takes the best nodes of all of
them (a path shared by two sources is one branch, labelled with the source that scored it
higher):
- model: EAGLE-2's candidates with the head's calibrated cumulative log-probabilities
  (`EagleDraft.tree_candidates`); a draft without them contributes its own tree, scored by the
  history prior below;
- history: the previous action's remaining tokens, each scored by how often, in this episode so
  far, the previous action's token at that position was the next action's ((hits + 1) / (actions
  + 2): a fresh episode starts at 1/2, a still scene climbs towards 1);
- retrieval: the datastore's continuations, scored by their share of the matching rows.
Before the prefill (no token of the action known) the same merge takes the model's early guesses,
the previous action and what followed equal actions.

A tree shape is hybrid when its text says `hybrid:` instead of `tree:` (decoding/spec.py); the
decoder then wraps its draft in a HybridDraft (any draft: a head, or history alone).
"""
from __future__ import annotations

import math

from ..vla.constants import ACTION_DIM
from .base import Draft
from .history import HistoryDraft
from .retrieval import ActionDatastore, RetrievalDraft
from .tree import HISTORY, MODEL, RETRIEVAL, DraftTree, TreeBuilder, TreeShape


class HybridDraft(Draft):
    """`model`: the draft whose branches join the tree (None: history and retrieval only);
    `datastore`: the retrieval's trace rows (None: this episode's actions only)."""

    def __init__(self, model: Draft | None, datastore: ActionDatastore | None = None):
        self.model = model if not isinstance(model, HistoryDraft) else None
        self.history, self.retrieval = HistoryDraft(), RetrievalDraft(datastore)
        self.name = model.name if model is not None else self.history.name
        self.agreement = [[0, 0] for _ in range(ACTION_DIM)]      # per position: previous token kept, actions

    def _parts(self) -> list[Draft]:
        return [part for part in (self.model, self.history, self.retrieval) if part is not None]

    def reset_episode(self) -> None:
        for part in self._parts():
            part.reset_episode()
        self.agreement = [[0, 0] for _ in range(ACTION_DIM)]

    def begin(self, hidden, input_embeds) -> None:
        for part in self._parts():
            part.begin(hidden, input_embeds)

    def accept(self, tokens: list[int], hidden) -> None:
        for part in self._parts():
            part.accept(tokens, hidden)

    def end_action(self, tokens: list[int]) -> None:
        previous = self.history.previous
        if len(previous) == ACTION_DIM and len(tokens) == ACTION_DIM:
            for counts, old, new in zip(self.agreement, previous, tokens):
                counts[0] += old == new
                counts[1] += 1
        for part in self._parts():
            part.end_action(tokens)

    def history_log_prob(self, position: int) -> float:
        kept, actions = self.agreement[position]
        return math.log((kept + 1) / (actions + 2))

    def propose(self, next_token: int, k: int) -> list[int]:
        return self.model.propose(next_token, k) if self.model is not None else self.history.propose(next_token, k)

    def propose_tree(self, next_token: int, shape: TreeShape) -> DraftTree:
        start = len(self.history.produced) + 1            # the first proposal's position in the action
        scored = self._history_paths(self.history.propose(next_token, shape.depth), start)
        scored += [(path, score, RETRIEVAL) for path, score in
                   self.retrieval.continuations(self.retrieval.produced + [next_token], shape.depth, shape.nodes)]
        scored += self._model_paths(next_token, shape, start)
        return merge(scored, shape.nodes)

    def propose_early_tree(self, shape: TreeShape) -> DraftTree:
        early = TreeShape(max(shape.nodes, ACTION_DIM), ACTION_DIM, shape.top_k, hybrid=True)
        scored = self._history_paths(self.history.propose_early(ACTION_DIM), 0)
        scored += [(path, score, RETRIEVAL) for path, score in self.retrieval.following(ACTION_DIM, shape.nodes)]
        self.retrieval.produced = []
        if self.model is not None:
            guess = self.model.propose_early_tree(early)
            source = self.model.early_source
            scored += [(path, self._prior(len(path), 0), source) for path in guess.paths()]
        return merge(scored, shape.nodes if shape.nodes >= ACTION_DIM else ACTION_DIM)

    def _history_paths(self, tokens: list[int], start: int) -> list[tuple]:
        return [(tuple(tokens[:end]), self._prior(end, start), HISTORY) for end in range(1, len(tokens) + 1)]

    def _prior(self, length: int, start: int) -> float:
        return sum(self.history_log_prob(start + index) for index in range(length))

    def _model_paths(self, next_token: int, shape: TreeShape, start: int) -> list[tuple]:
        if self.model is None:
            return []
        candidates = getattr(self.model, "tree_candidates", None)
        if candidates is None:
            tree = self.model.propose_tree(next_token, shape)
            return [(path, self._prior(len(path), start), MODEL) for path in tree.paths()]
        tokens, parents, scores = candidates(next_token, shape.depth, shape.top_k)
        paths = DraftTree(tokens, parents, [MODEL] * len(tokens)).paths()
        return list(zip(paths, scores.tolist(), [MODEL] * len(paths)))


def merge(scored: list[tuple], nodes: int) -> DraftTree:
    """The best `nodes` nodes of scored token paths [(path, log score, source)], best first (ties:
    the order given), each added with its ancestors; a path already in the tree costs nothing."""
    builder = TreeBuilder(nodes)
    for path, _, source in sorted(scored, key=lambda entry: -entry[1]):
        if len(builder) >= nodes:
            break
        builder.add(path, source)
    return builder.tree()
