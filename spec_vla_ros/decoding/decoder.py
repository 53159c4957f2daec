"""Greedy decoding of OpenVLA's 7 action tokens: autoregressive, or speculative with a draft.

Speculative loop for one action (gpt-fast style, specialised to a fixed 7-token answer):
  1. the draft may guess the whole action before the prefill (history, carried state);
  2. prefill = vision + projector + language model over the prompt and those guesses;
  3. repeat until 7 tokens: the draft proposes up to `num_draft_tokens` tokens after the
     verifier's pending token; one verifier pass checks them; the longest prefix that passes
     the acceptance rule is kept, plus the verifier's own token at the first rejection (free);
     the KV cache and the draft roll back to the accepted prefix.

With a tree shape (drafts/tree.py) the draft proposes a token tree instead of a chain, in both
steps 1 and 3; one pass verifies every node under a tree attention mask (vla/session.py), and
`judge_tree` keeps the longest root-to-leaf path that passes the rule at every node (Spec-VLA /
EAGLE's `evaluate_posterior` over the tree's paths: strict, the verifier's argmax at each node;
relaxed, within the threshold; among equally long paths the first in node order, i.e. the one the
draft preferred), then the verifier's own token after it. The cache keeps that path's keys and
values (`VerifierSession.keep_path`). A chain goes through `prefill` / `extend` as before, so a
chain shape gives exactly the chain decoder's tokens and statistics.

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
from dataclasses import dataclass

import torch

from ..drafts.base import Draft
from ..drafts.hybrid import HybridDraft
from ..drafts.kinds import AR
from ..drafts.tree import DraftTree, TreeShape
from ..vla import compiled_passes
from ..vla.constants import ACTION_DIM, EOS_TOKEN_ID
from ..vla.model import OpenVLA
from ..vla.session import KV_CACHES, VerifierSession, VerifierStep
from .acceptance import STRICT, Acceptance
from .stats import DecodeStats

# Logits rows read at once while judging: the rows asked for, then the preferred children below the
# first of them. On the CPU a block of up to 4 rows costs one read of the lm_head, like a single
# row (miniature, one thread, scratch timing on the shared 2-core machine: ~3.5 ms for 1, 2 or 4
# rows, 5.4 for 8), so a right first guess usually finds the next rows computed. Logits computed in
# the pass (CUDA) are only indexed.
READ_AHEAD_ROWS = 4
ROOT = -1                  # the pending position (its logits row is 0; node i's is i + 1)


class Decoder:
    def __init__(self, model: OpenVLA | None, draft: Draft | None = None, num_draft_tokens: int = 4,
                 acceptance: Acceptance = STRICT, session_factory=None, draft_checkpoint: str = "",
                 tree: TreeShape | None = None, kv_cache: str = "dynamic", compiled: bool = False):
        """`session_factory` (default: a VerifierSession over `model`) lets offline tools replay
        recorded verifier outputs through this same loop (tree shapes need sessions with
        `verify_tree` and `keep_path`). `draft_checkpoint`: the directory the draft head was loaded
        from ('' for none), copied into every DecodeStats. `tree`: the draft's tree shape; None
        proposes chains of `num_draft_tokens`; a hybrid shape wraps the draft in a HybridDraft
        (drafts/hybrid.py) retrieving from the draft's datastore. `kv_cache`: the verifier
        sessions' cache, "dynamic" or "static" (vla/session.py; same tokens up to float32 noise),
        and a Llama draft head's (drafts/llama.py); `compiled`: passes and prefills compiled per
        length bucket over the static cache (vla/compiled_passes.py), and a draft head's one-token
        steps (EagleDraft.configure); `warm_up` compiles them before the first action."""
        if draft is not None and (not isinstance(num_draft_tokens, int) or num_draft_tokens < 1):
            raise ValueError(f"num_draft_tokens must be an integer >= 1, got {num_draft_tokens!r}")
        if tree is not None and not isinstance(tree, TreeShape):
            raise ValueError(f"tree must be a TreeShape or None (chains), got {tree!r}")
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
        self.kv_cache, self.compiled = kv_cache, compiled
        self.new_session = session_factory or (lambda: VerifierSession(model, kv_cache, compiled))
        self.num_draft_tokens = num_draft_tokens
        self.tree = tree
        if hasattr(draft, "configure"):              # a draft head: its cache and steps as the verifier's
            draft.configure(kv_cache, compiled, self.shape.head_rows)
        if draft is not None and tree is not None and tree.hybrid and not isinstance(draft, HybridDraft):
            draft = HybridDraft(draft, draft.datastore)
        self.draft = draft
        self.acceptance = acceptance
        self.draft_checkpoint = draft_checkpoint

    @property
    def shape(self) -> TreeShape:
        """What the draft proposes in: the tree shape, or the chain of num_draft_tokens."""
        return self.tree or TreeShape.chain(self.num_draft_tokens)

    @property
    def largest_pass(self) -> int:
        """Positions of this decoder's longest pass after the prompt: the pending token and the most
        proposals a pass verifies (1 for AR)."""
        return 1 if self.draft is None else 1 + self.shape.nodes

    def warm_up(self, pixel_values: torch.Tensor, prompt_ids: list[int]) -> float:
        """Compile the passes this decoder will run and its draft's steps (compiled only; nothing
        otherwise) on this observation, before the first action; -> seconds."""
        if not self.compiled:
            return 0.0
        start = time.perf_counter()
        compiled_passes.warm_up(self.new_session(), pixel_values, prompt_ids, self.largest_pass)
        if self.draft is not None:                   # the draft's compiled steps: one action, then forgotten
            self.decode(pixel_values, prompt_ids)
            self.reset_episode()
        return time.perf_counter() - start

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
                            draft_checkpoint=self.draft_checkpoint, tree_shape=self.shape.name if self.draft else "")
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
        draft, session, shape = self.draft, self.new_session(), self.shape
        with Timer(stats, "draft_ms"):
            early = draft.propose_early_tree(shape).pruned(ACTION_DIM)
        with Timer(stats, "verify_ms"):              # the verifier's logits are read while judging
            step = session.prefill(pixel_values, prompt_ids, list(early.tokens)) if early.is_chain else \
                session.prefill(pixel_values, prompt_ids, list(early.tokens), list(early.parents))
            judged = self._judge(early, step, 0)
        record(stats, early, judged)
        prompt_length = session.length - len(early)      # BOS, patches, prompt tokens
        keep(session, early, judged.path, prompt_length + len(judged.path))
        tokens = judged.tokens
        with Timer(stats, "draft_ms"):
            draft.begin(step.hidden[:prompt_length], step.input_embeds[:prompt_length])
            if judged.path:
                draft.accept(tokens[:len(judged.path)], step.hidden[[prompt_length + node for node in judged.path]])

        while not finished(tokens):
            next_token, remaining = tokens[-1], ACTION_DIM - len(tokens) - 1
            with Timer(stats, "draft_ms"):
                tree = draft.propose_tree(next_token, shape.capped(remaining)).pruned(remaining) if remaining else \
                    DraftTree.chain(draft.propose(next_token, 0), draft.source)
            with Timer(stats, "verify_ms"):
                if tree.is_chain:
                    step = session.extend([next_token] + list(tree.tokens))
                else:
                    step = session.verify_tree([next_token] + list(tree.tokens),
                                               [ROOT] + [parent + 1 for parent in tree.parents])
                judged = self._judge(tree, step, len(tokens))
            record(stats, tree, judged)
            rows = [0] + [node + 1 for node in judged.path]          # the pending token, then the kept nodes
            keep(session, tree, rows, session.length - len(tree) - 1 + len(rows))
            with Timer(stats, "draft_ms"):
                draft.accept([next_token] + judged.tokens[:len(judged.path)], step.hidden[rows])
            tokens += judged.tokens
        tokens = tokens[:ACTION_DIM]
        with Timer(stats, "draft_ms"):
            draft.end_action(tokens)
        stats.verifier_passes = session.passes
        return tokens

    def _judge(self, tree: DraftTree, step: VerifierStep, start: int) -> "Judgement":
        """judge_tree with this decoder's acceptance rule."""
        return judge_tree(tree, step, start, self.acceptance)


@dataclass(frozen=True)
class Judgement:
    """One verifier pass judged. path: the kept proposals (tree nodes, the first proposal first);
    tokens: what the pass adds to the action (their tokens, then the verifier's own token after
    them), cut after the action's last token and after an EOS (generate stops there); judged:
    draft positions the verifier judged on the kept path (len(path), plus one when a proposal that
    followed it was rejected)."""
    path: list
    tokens: list
    judged: int


def judge_tree(tree: DraftTree, step: VerifierStep, start: int, acceptance: Acceptance) -> Judgement:
    """The longest root-to-leaf path of `tree` whose every proposal passes `acceptance` against the
    verifier's token at its parent (the pending position for a first proposal); among equally long
    paths, the first in node order. The first proposal is token `start` of the action.

    Level by level, only the logits rows of accepted nodes are read (on the CPU each block of rows
    costs a read of the whole lm_head), with READ_AHEAD_ROWS along preferred children."""
    first, children = tree.children()
    limit = ACTION_DIM - start                        # proposals past the action's last token are never kept
    verifier: dict[int, int] = {}                     # node (ROOT: the pending position) -> verifier's token after it
    frontier, best, depth = [ROOT], ROOT, 0
    while frontier:
        expandable = [node for node in frontier
                      if depth < limit and (node == ROOT or tree.tokens[node] != EOS_TOKEN_ID)]
        read_rows(step, verifier, expandable, first, children)
        accepted = []
        for node in expandable:
            for child in (first if node == ROOT else children[node]):
                if acceptance.accepts(tree.tokens[child], verifier[node], start + depth):
                    accepted.append(child)
        if accepted:
            best = accepted[0]
        frontier, depth = accepted, depth + 1
    path = tree.path(best) if best != ROOT else []
    # A path is at most `limit` deep and ends at its first EOS (nothing after one is expanded), so
    # the cut below only drops the verifier's own token after it.
    own = [verifier[best]] if best in verifier else []
    tokens = until_eos(([tree.tokens[node] for node in path] + own)[:limit])
    followed = bool(first if best == ROOT else children[best])
    return Judgement(path, tokens, len(path) + followed)


def read_rows(step: VerifierStep, verifier: dict, nodes: list[int], first: list[int], children: list) -> None:
    """The verifier's tokens after `nodes` (and after their read-ahead) into `verifier`."""
    needed = [node for node in nodes if node not in verifier]
    if not needed:
        return
    wanted = list(needed)
    below = first if needed[0] == ROOT else children[needed[0]]
    while below and len(wanted) < READ_AHEAD_ROWS:       # the preferred child, its preferred child, ...
        if below[0] not in verifier and below[0] not in wanted:
            wanted.append(below[0])
        below = children[below[0]]
    rows = [node + 1 for node in wanted]
    if rows == list(range(rows[0], rows[0] + len(rows))):
        tokens = step.greedy(rows[0], rows[-1] + 1)      # a range: what every session's steps serve
    else:
        tokens = step.greedy_rows(rows)
    verifier.update(zip(wanted, tokens))


def record(stats: DecodeStats, tree: DraftTree, judged: Judgement) -> None:
    stats.proposed_per_pass.append(len(tree))
    stats.accepted_per_pass.append(len(judged.path))
    stats.judged_per_pass.append(judged.judged)
    stats.source_per_pass.append(tree.sources[judged.path[-1]] if judged.path else "")


def keep(session, tree: DraftTree, rows: list[int], length: int) -> None:
    """Roll the cache back to the kept path: truncation after a chain, compaction after a tree."""
    if tree.is_chain:
        session.truncate(length)
    else:
        session.keep_path(rows)


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
