"""Draft trees: several candidate continuations, verified together in one verifier pass.

A draft proposes a `DraftTree` of action tokens after the verifier's pending token: token ids,
parent indices in parents-first order (-1: the node follows the pending token, i.e. it is a
first proposal) and, per node, the *source* that proposed it (`model`: a draft head; `history`:
the previous action; `retrieval`: a datastore of earlier action-token sequences). The decoder
sends the pending token and the tree through one verifier pass with a tree attention mask
(vla/session.py) and keeps the longest accepted root-to-leaf path. A chain (each node the child of
the one before) is a tree of width 1: what every draft proposed before trees.

`TreeShape` is the setting (decoding/spec.py parses its text): `nodes`, the most proposals in one
pass; `depth`, the most proposals on one path; `top_k`, the children a model draft expands per
node and level (EAGLE-2's dynamic tree); `hybrid`, whether the tree merges the draft's branches
with the previous action and retrieved continuations under the same node budget
(drafts/hybrid.py). A chain of k tokens is `TreeShape.chain(k)` (nodes = depth = k, top_k = 1):
today's `num_draft_tokens`. Spec-VLA verifies EAGLE-2's tree of top-k 8, depth 4 and about 50
nodes (`SPEC_VLA_TREE`).

Node order within a tree: parents first; the children of a node in the order its draft prefers
them (most likely first). The decoder relies on that order only to break ties between equally
long accepted paths (relaxed acceptance) and to read ahead logits rows along preferred children.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN
from ..vla.token_tree import check_tree, tree_depths

MODEL, HISTORY, RETRIEVAL = "model", "history", "retrieval"
SOURCES = (MODEL, HISTORY, RETRIEVAL)
ACTION_BINS = ACTION_TOKEN_MAX - ACTION_TOKEN_MIN + 1
MAX_TREE_NODES = 256          # proposals in one pass: a bound on the pass and its mask, far above useful trees


@dataclass(frozen=True)
class TreeShape:
    """`nodes` proposals at most per pass, `depth` at most on one path, `top_k` children expanded per
    node by a model draft, `hybrid`: with history and retrieval branches. ValueError (one line)
    for values out of range."""

    nodes: int
    depth: int
    top_k: int
    hybrid: bool = False

    def __post_init__(self):
        for name, value, low, high in (("nodes", self.nodes, 1, MAX_TREE_NODES), ("depth", self.depth, 1, ACTION_DIM),
                                       ("top_k", self.top_k, 1, ACTION_BINS)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"tree {name} {value!r}: expected an integer in {low}..{high}")
        if self.depth > self.nodes:
            raise ValueError(f"tree depth {self.depth} needs at least as many nodes, got {self.nodes}")
        if not isinstance(self.hybrid, bool):
            raise ValueError(f"tree hybrid {self.hybrid!r}: expected true or false")
        if self.top_k == 1 and not self.hybrid and self.nodes != self.depth:
            raise ValueError(f"a tree of top_k 1 is a chain: nodes ({self.nodes}) must equal depth ({self.depth})")

    @classmethod
    def chain(cls, tokens: int) -> "TreeShape":
        """`tokens` proposals in a row (num_draft_tokens)."""
        return cls(tokens, tokens, 1)

    @property
    def is_chain(self) -> bool:
        return self.top_k == 1 and not self.hybrid

    @property
    def head_rows(self) -> int:
        """The most positions a model draft's head appends to its state for one proposal of this
        shape: a chain's steps, or a tree's first step and, per deeper level, top_k children of
        each of up to top_k candidates (EagleDraft.tree_candidates)."""
        return 1 + (self.depth - 1) * self.top_k ** 2

    def capped(self, depth: int) -> "TreeShape":
        """This shape with at most `depth` (>= 1) proposals on a path (the action's remaining tokens)."""
        depth = min(self.depth, depth)
        return TreeShape.chain(depth) if self.is_chain else TreeShape(self.nodes, depth, self.top_k, self.hybrid)

    @property
    def name(self) -> str:
        """`chain:K`, `tree:NODES:DEPTH:TOP_K` or `hybrid:NODES:DEPTH:TOP_K` (decoding/spec.py reads them)."""
        if self.is_chain:
            return f"chain:{self.depth}"
        return f"{'hybrid' if self.hybrid else 'tree'}:{self.nodes}:{self.depth}:{self.top_k}"


SPEC_VLA_TREE = TreeShape(50, 4, 8)       # Spec-VLA's EAGLE-2 tree: top-k 8 per level, depth 4, ~50 nodes


@dataclass(frozen=True)
class DraftTree:
    """Proposed tokens after the pending token: `tokens[i]` with parent `parents[i]` (-1: a first
    proposal; otherwise an earlier node) and `sources[i]` (one of SOURCES)."""

    tokens: tuple = ()
    parents: tuple = ()
    sources: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "tokens", tuple(int(token) for token in self.tokens))
        object.__setattr__(self, "parents", tuple(self.parents))
        object.__setattr__(self, "sources", tuple(self.sources))
        check_tree(list(self.parents), len(self.tokens))
        if len(self.sources) != len(self.tokens) or not set(self.sources) <= set(SOURCES):
            raise ValueError(f"a draft tree needs one source per token out of {', '.join(SOURCES)}; got "
                             f"{list(self.sources)} for {len(self.tokens)} tokens")

    @classmethod
    def chain(cls, tokens, source: str = MODEL) -> "DraftTree":
        tokens = list(tokens)
        return cls(tokens, tuple(range(-1, len(tokens) - 1)), (source,) * len(tokens))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        return all(parent == index - 1 for index, parent in enumerate(self.parents))

    @property
    def depth(self) -> int:
        """Proposals on the longest path (0 for an empty tree)."""
        return max(tree_depths(list(self.parents)), default=-1) + 1

    def children(self) -> tuple[list[int], list[list[int]]]:
        """(the first proposals, each node's children), in node order."""
        first, children = [], [[] for _ in self.tokens]
        for index, parent in enumerate(self.parents):
            (first if parent < 0 else children[parent]).append(index)
        return first, children

    def pruned(self, depth: int) -> "DraftTree":
        """The nodes at most `depth` proposals deep (parents first, so indices keep)."""
        keep = [d < depth for d in tree_depths(list(self.parents))]
        if all(keep):
            return self
        kept = [index for index, k in enumerate(keep) if k]
        new_index = {old: new for new, old in enumerate(kept)}
        return DraftTree([self.tokens[i] for i in kept],
                         [new_index[self.parents[i]] if self.parents[i] >= 0 else -1 for i in kept],
                         [self.sources[i] for i in kept])

    def path(self, node: int) -> list[int]:
        """Nodes from a first proposal down to `node`."""
        path = []
        while node >= 0:
            path.append(node)
            node = self.parents[node]
        return path[::-1]

    def paths(self) -> list[tuple[int, ...]]:
        """Token paths of every node (root-first token tuples), in node order."""
        result: list[tuple[int, ...]] = []
        for token, parent in zip(self.tokens, self.parents):
            result.append((result[parent] if parent >= 0 else ()) + (token,))
        return result


class TreeBuilder:
    """Builds a DraftTree from token paths (a trie): adding a path adds only its nodes not yet in
    the tree, each labelled with the source that added it first, up to a node budget."""

    def __init__(self, budget: int):
        self.budget = budget
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.sources: list[str] = []
        self.index: dict[tuple, int] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, path, source: str) -> int:
        """Add the nodes of token path `path` (first proposal first) while the budget lasts; returns
        how many of its tokens the tree now holds as a path."""
        parent, key = -1, ()
        for depth, token in enumerate(path):
            key = key + (int(token),)
            node = self.index.get(key)
            if node is None:
                if len(self.tokens) >= self.budget:
                    return depth
                node = self.index[key] = len(self.tokens)
                self.tokens.append(int(token))
                self.parents.append(parent)
                self.sources.append(source)
            parent = node
        return len(path)

    def contains(self, path) -> bool:
        return tuple(int(token) for token in path) in self.index

    def tree(self) -> DraftTree:
        """The tree, reordered parents first by depth (nodes of one depth keep the order they were added in)."""
        depths = tree_depths(self.parents)
        order = sorted(range(len(self.tokens)), key=lambda node: (depths[node], node))
        new_index = {old: new for new, old in enumerate(order)}
        return DraftTree([self.tokens[node] for node in order],
                         [new_index[self.parents[node]] if self.parents[node] >= 0 else -1 for node in order],
                         [self.sources[node] for node in order])
