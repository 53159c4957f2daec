"""Retrieval: continuations of the action so far, looked up in a datastore of action-token sequences
(REST, He et al. 2024; HeiSD's retrieval drafter), at no model cost.

The datastore (`ActionDatastore`) holds rows of 7 action tokens the verifier produced: the draft's
training traces (`actions.safetensors` beside a draft head's checkpoint, written by
`write_datastore`) and, while an episode runs, its own finished actions (`RetrievalDraft`). A row
also knows which row was the step before it in its episode, if any.

Query with the action's tokens so far a_0..a_t: the rows whose tokens at positions t-m+1..t equal
the last m of them, for the longest m up to MAX_KEY with a match (the episode's own rows weigh
EPISODE_WEIGHT times a trace row: same scene, same verifier state); their next tokens
a_{t+1}.. form a trie, each node scored by the weight of the rows through it over the weight of
all matching rows plus PSEUDO_COUNT (a share estimated from little evidence is discounted: on the
miniature a continuation of a few trace rows is rarely the verifier's token, the episode's own
repeats often are). The
best-scored nodes, parents first, are the proposals. Before the prefill no token of the action is
known: the key is then the previous action, and the rows that followed an equal action in an
episode propose the whole action.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..vla.constants import ACTION_DIM
from .base import Draft
from .tree import RETRIEVAL, DraftTree, TreeBuilder, TreeShape

DATASTORE_FILE = "actions.safetensors"
MAX_KEY = 3              # tokens of the action so far a lookup matches at most
EPISODE_WEIGHT = 20.0    # one of this episode's own actions counts as this many trace rows
# Discount of a share estimated from few matching rows, in trace rows. Chosen on synthetic scenes
# of seeds 200000.. (12 x 5 steps, not the decode benchmark's default sample): the llama head's
# hybrid:50 tree needed 2.47, 2.40, 2.32, 2.27 and 2.25 passes per action at 1, 10, 30, 100 and 300
# (strict; history alone in a hybrid tree 3.78 at every value).
PSEUDO_COUNT = 100.0
MAX_CHAIN_NODES = 256    # trie nodes looked at for a chain (its best child at every depth)


class ActionDatastore:
    """`tokens` [rows, 7] action token ids; `previous` [rows]: the row of the step before it in
    its episode, -1 for none. `verifier`: the verifier that produced them ('' unknown)."""

    def __init__(self, tokens: np.ndarray, previous: np.ndarray | None = None, verifier: str = ""):
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1, ACTION_DIM)
        previous = np.full(len(tokens), -1, dtype=np.int64) if previous is None else np.asarray(previous, np.int64)
        if previous.shape != (len(tokens),) or ((previous < -1) | (previous >= len(tokens))).any():
            raise ValueError(f"datastore 'previous' must hold one row index (or -1) per row of tokens, "
                             f"got shape {previous.shape} for {len(tokens)} rows")
        self.tokens, self.previous, self.verifier = tokens, previous, verifier

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def empty(cls) -> "ActionDatastore":
        return cls(np.zeros((0, ACTION_DIM), dtype=np.int64))


def write_datastore(path, datastore: ActionDatastore, source: str) -> None:
    """Write `datastore` as safetensors (tokens int32, previous int64; metadata: verifier, source)."""
    save_file({"tokens": torch.from_numpy(datastore.tokens.astype(np.int32)),
               "previous": torch.from_numpy(datastore.previous)}, str(path),
              metadata={"verifier": datastore.verifier, "source": source})


def read_datastore(path) -> ActionDatastore:
    """The datastore at `path`; ValueError naming the file if it is not one."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tokens, previous = file.get_tensor("tokens"), file.get_tensor("previous")
    except (SafetensorError, OSError, KeyError) as error:
        raise ValueError(f"{path}: not a readable action datastore ({error})") from None
    return ActionDatastore(tokens.numpy(), previous.numpy(), metadata.get("verifier", ""))


def datastore_verifier(path) -> str:
    """The verifier a datastore file was made with (its header only)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            return (file.metadata() or {}).get("verifier", "")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable action datastore ({error})") from None


def find_datastore(directory: Path | None) -> Path | None:
    """`actions.safetensors` in a draft head's checkpoint directory, or in the directory of drafts
    above it; None if neither has one."""
    if directory is None:
        return None
    for candidate in (Path(directory) / DATASTORE_FILE, Path(directory).parent / DATASTORE_FILE):
        if candidate.is_file():
            return candidate
    return None


class RetrievalDraft(Draft):
    """Proposes the datastore's continuations of the action so far (see the module doc)."""

    name = "retrieval"
    source = early_source = RETRIEVAL

    def __init__(self, datastore: ActionDatastore | None = None):
        self.datastore = datastore or ActionDatastore.empty()
        self.episode: list[list[int]] = []          # this episode's finished actions, in order
        self.produced: list[int] = []               # this action's tokens so far (the pending one excluded)

    def reset_episode(self) -> None:
        self.episode = []

    def begin(self, hidden, input_embeds) -> None:
        self.produced = []

    def accept(self, tokens: list[int], hidden) -> None:
        self.produced.extend(tokens)

    def end_action(self, tokens: list[int]) -> None:
        if len(tokens) == ACTION_DIM:
            self.episode.append(list(tokens))

    def propose(self, next_token: int, k: int) -> list[int]:
        return best_chain(self.continuations(self.produced + [next_token], k, MAX_CHAIN_NODES))

    def propose_tree(self, next_token: int, shape: TreeShape) -> DraftTree:
        return tree_of(self.continuations(self.produced + [next_token], shape.depth, shape.nodes), shape.nodes)

    def propose_early(self, k: int) -> list[int]:
        self.produced = []
        return best_chain(self.following(k, MAX_CHAIN_NODES))

    def propose_early_tree(self, shape: TreeShape) -> DraftTree:
        self.produced = []
        return tree_of(self.following(ACTION_DIM, shape.nodes), shape.nodes)

    def continuations(self, so_far: list[int], depth: int, count: int) -> list[tuple[tuple, float]]:
        """Up to `count` (token path, log score) of the next `depth` tokens after `so_far`, best first."""
        position = len(so_far)                      # the first continued token's position in the action
        depth = min(depth, ACTION_DIM - position)
        if depth <= 0 or not so_far:
            return []
        rows, weights = self._rows()
        for length in range(min(MAX_KEY, len(so_far)), 0, -1):
            key = np.asarray(so_far[-length:])
            match = np.all(rows[:, position - length:position] == key, axis=1)
            if match.any():
                return best_paths(rows[match, position:position + depth], weights[match], count)
        return []

    def following(self, depth: int, count: int) -> list[tuple[tuple, float]]:
        """Up to `count` (token path, log score) for the whole action: what followed an action equal
        to the previous one, in the traces' episodes and in this one."""
        if not self.episode:
            return []
        previous = np.asarray(self.episode[-1])
        store = self.datastore
        followers = store.previous >= 0
        equal = np.zeros(len(store), dtype=bool)
        equal[followers] = np.all(store.tokens[store.previous[followers]] == previous, axis=1)
        paths, weights = [store.tokens[equal]], [np.ones(int(equal.sum()))]
        mine = [after for before, after in zip(self.episode, self.episode[1:]) if before == list(previous)]
        if mine:
            paths.append(np.asarray(mine))
            weights.append(np.full(len(mine), EPISODE_WEIGHT))
        rows = np.concatenate(paths)
        return best_paths(rows[:, :depth], np.concatenate(weights), count) if len(rows) else []

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Trace rows and this episode's, with their weights."""
        if not self.episode:
            return self.datastore.tokens, np.ones(len(self.datastore))
        return (np.concatenate([self.datastore.tokens, np.asarray(self.episode)]),
                np.concatenate([np.ones(len(self.datastore)), np.full(len(self.episode), EPISODE_WEIGHT)]))


def best_paths(continuations: np.ndarray, weights: np.ndarray, count: int) -> list[tuple[tuple, float]]:
    """The trie of `continuations` (rows of tokens, weighted): its `count` best nodes as (token
    path, log score), score = weight through the node / (total weight + PSEUDO_COUNT); best first,
    ties shallower first, then in the order first seen (parents before children)."""
    through: dict[tuple, float] = {}
    for row, weight in zip(continuations.tolist(), weights.tolist()):
        for end in range(1, len(row) + 1):
            key = tuple(row[:end])
            through[key] = through.get(key, 0.0) + weight
    total = float(weights.sum()) + PSEUDO_COUNT
    order = sorted(through, key=lambda path: (-through[path], len(path)))[:count]
    return [(path, math.log(through[path] / total)) for path in order]


def best_chain(scored: list[tuple[tuple, float]]) -> list[int]:
    """The chain of best children from the root, in scored paths (best_paths' order)."""
    chain: tuple = ()
    for path, _ in scored:
        if len(path) == len(chain) + 1 and path[:-1] == chain:
            chain = path
    return list(chain)


def tree_of(scored: list[tuple[tuple, float]], nodes: int) -> DraftTree:
    """A DraftTree of retrieved paths (each with its ancestors listed before it)."""
    builder = TreeBuilder(nodes)
    for path, _ in scored:
        builder.add(path, RETRIEVAL)
    return builder.tree()
