"""VerifierSession: the verifier's KV cache for one action, with prefill / extend / tree passes / truncate.

A verifier *pass* is one forward of the language model over new positions. Decoders (AR or
speculative) drive a session; drafts read the hidden states and input embeddings it returns.

Tree passes (`verify_tree`, or `prefill` with `parents`): the new positions form a token tree,
given as token ids and parent indices in parents-first order (`parents[i] < i`; -1: the node
follows the last position before the tree). Each node attends to the cached prefix, its
ancestors and itself (`tree_attention_mask`) at position prefix length + depth
(`tree_position_ids`), so every root-to-leaf path is computed as if it had been fed alone. After
judging, `keep_path` moves the accepted path's keys and values to the positions right after the
prefix and drops the rest (`move_positions_`): the cache then equals the one a chain pass over
that path would have built. The three helpers work on plain tensors, so the static KV cache
uses them as well as transformers' DynamicCache. A chain (every parent the node before it) is a
tree of width 1; decoders send chains through `prefill` / `extend` as before.

KV caches (`kv_cache`): "dynamic" (transformers' DynamicCache, a new one per session: keys and
values grow by concatenation each pass, a rollback crops them) or "static" (`StaticKVCache`: one
preallocated cache of transformers' StaticLayers per loaded model, reused by every session over
it; a pass writes its keys and values at the current length, a rollback moves the length, nothing
is allocated or copied per pass). A static pass attends over the whole preallocated length, with
an explicit mask (unused positions masked) and explicit positions: fixed shapes and addresses,
what graph capture on CUDA needs; or, the default on the CPU, over the positions written so far
(views of the same tensors; masks as the dynamic cache gets them). Both
caches give the same tokens up to the float32 noise of passes of other shapes (test_static_cache.py;
CPU cost: scripts/kv_cache_costs.py).
"""
from __future__ import annotations

import weakref

import torch
from transformers import Cache, DynamicCache
from transformers.cache_utils import StaticLayer

from .compiled_passes import CompiledPasses, bucket_for, prefill_bucket
from .constants import ACTION_DIM
from .model import OpenVLA
from .token_tree import check_tree, tree_depths

KV_CACHES = ("dynamic", "static")


class VerifierStep:
    """Outputs of one verifier pass over `n` new positions.

    logits:       [k, vocab] for the last k positions (k = 1 + number of proposals verified)
    hidden:       [n, H] last-layer hidden states (after the final norm: lm_head(hidden) = logits)
    input_embeds: [n, H] the embeddings fed at those positions

    Built with `lm_head_weight` instead of `logits` (the CPU path of VerifierSession), the logits are
    computed from the last k rows of `hidden` when read, and `greedy(start, stop)` computes only the
    rows it is asked for, in blocks of at least two (`lm_head_logits` reads the head once for either)
    kept for later calls: a speculative decoder needs the rows after a rejected proposal only when
    that proposal was accepted, and on the CPU each block costs a full read of the 32064-row head.
    """

    def __init__(self, hidden: torch.Tensor, input_embeds: torch.Tensor, logits: torch.Tensor | None = None,
                 lm_head_weight: torch.Tensor | None = None, num_logits: int = 0):
        if (logits is None) == (lm_head_weight is None):
            raise ValueError("VerifierStep needs exactly one of logits or lm_head_weight")
        self.hidden, self.input_embeds = hidden, input_embeds
        self._logits, self.lm_head_weight = logits, lm_head_weight
        self.num_logits = num_logits if logits is None else logits.shape[0]
        self._greedy: dict[int, int] = {}           # logits row -> argmax, for rows computed lazily

    @property
    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        if self._logits is None:
            self._logits = lm_head_logits(self.lm_head_weight, self.hidden[self.hidden.shape[0] - self.num_logits:])
        return self._logits

    @torch.inference_mode()
    def greedy(self, start: int = 0, stop: int | None = None) -> list[int]:
        """The argmax of logits rows start..stop-1 (all by default); an exact tie goes to the lowest id
        (torch.argmax returns the first)."""
        stop = self.num_logits if stop is None else min(stop, self.num_logits)
        if self._logits is not None:
            return self._logits[start:stop].argmax(dim=-1).tolist()
        missing = [row for row in range(start, stop) if row not in self._greedy]
        if missing:
            first, end = missing[0], min(max(missing[-1] + 1, missing[0] + 2), self.num_logits)
            self._compute_rows(list(range(first, end)))
        return [self._greedy[row] for row in range(start, stop)]

    @torch.inference_mode()
    def greedy_rows(self, rows: list[int]) -> list[int]:
        """The argmax of the given logits rows, in their order (a tree pass's nodes are not
        contiguous); rows not computed yet are computed in one block (of at least two where the
        pass has two)."""
        if self._logits is not None:
            return self._logits[list(rows)].argmax(dim=-1).tolist() if rows else []
        missing = [row for row in dict.fromkeys(rows) if row not in self._greedy]
        if missing:
            if len(missing) == 1 and self.num_logits > 1:      # a block of two costs what one row does
                missing.append(missing[0] + 1 if missing[0] + 1 < self.num_logits else missing[0] - 1)
            self._compute_rows(missing)
        return [self._greedy[row] for row in rows]

    def _compute_rows(self, rows: list[int]) -> None:
        offset = self.hidden.shape[0] - self.num_logits
        logits = lm_head_logits(self.lm_head_weight, self.hidden[[offset + row for row in rows]])
        self._greedy.update(zip(rows, logits.argmax(dim=-1).tolist()))

    def top2_margins(self) -> list[float]:
        """Per row, the largest logit minus the second largest (0.0 at an exact tie): how far the
        greedy choice is from flipping. Float32 logits of one position move by ~1e-5 between
        passes of different shapes (see decoding.acceptance.LOSSLESS_CLAIM)."""
        top = self.logits.float().topk(2, dim=-1).values
        return (top[:, 0] - top[:, 1]).tolist()


class WrittenPositionsLayer(StaticLayer):
    """transformers' StaticLayer whose attention reads only the positions written so far: views of
    the preallocated keys and values, so still no allocation or copy per pass."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        written = int(self.cumulative_length)
        return keys[:, :, :written], values[:, :, :written]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(key positions, offset) of the pass's mask, for a mask transformers builds itself."""
        return int(self.cumulative_length) + query_length, 0


class StaticKVCache:
    """The verifier's keys and values, preallocated once per loaded model (StaticLayers;
    `static_kv_cache(model)`) and lent to one session at a time: each session's
    prefill claims it (its length back to 0; the old contents are masked, never read), and a
    session whose cache was claimed by a newer one refuses to run. A claim reserves room for the
    prompt, an action and a pass of PASS_RESERVE positions; a longer prompt or pass grows it by one
    fresh allocation, rounded up to GROWTH positions (at a claim nothing is copied, within an action
    the keys and values so far are)."""

    GROWTH = 64
    PASS_RESERVE = 64            # positions kept free after prompt + action at a claim (a tree pass)
    PROMPT_SLACK = 64            # compiled: room for prompts this much longer than the first (a new
                                 # allocation changes the passes' shapes, and they compile again)

    def __init__(self, model: OpenVLA, whole_length: bool | None = None, compiled: bool = False,
                 backend: str | None = None):
        """`whole_length`: attention over the whole preallocated length (fixed shapes, for graph
        capture) or over the positions written so far; default: whole on CUDA, written on the CPU.
        `compiled`: passes and prefills run compiled per length bucket (vla/compiled_passes.py;
        whole length implied), with torch.compile's `backend` (default: CUDA graphs on CUDA,
        tracing only on the CPU)."""
        config = model.language_model.config
        self.num_layers = config.num_hidden_layers
        self.heads = (config.num_key_value_heads, getattr(config, "head_dim", None)
                      or config.hidden_size // config.num_attention_heads)
        self.dtype, self.device = model.language_model.dtype, model.projector.fc1.weight.device
        if whole_length is None:
            whole_length = self.device.type == "cuda"
        self.whole_length = whole_length or compiled
        self.cache: Cache | None = None
        self.capacity = 0
        self.owner: object | None = None
        self.compiled = CompiledPasses(model.language_model, self, backend) if compiled else None

    def _allocate(self, capacity: int) -> Cache:
        self.capacity = -(-capacity // self.GROWTH) * self.GROWTH
        layer = StaticLayer if self.whole_length else WrittenPositionsLayer
        cache = Cache(layers=[layer(max_cache_len=self.capacity) for _ in range(self.num_layers)])
        # now, not at the first write: a compiled prefill would otherwise be traced for an empty cache
        cache.early_initialization(1, *self.heads, self.dtype, self.device)
        return cache

    def claim(self, owner: object, needed: int) -> Cache:
        """The cache for a new session's prefill of `needed` positions, empty."""
        reserve = needed + ACTION_DIM + self.PASS_RESERVE
        if self.cache is None or reserve > self.capacity:
            self.cache = self._allocate(reserve + (self.PROMPT_SLACK if self.compiled is not None else 0))
        else:
            self.cache.crop(-int(self.cache.get_seq_length()))
        self.owner = owner
        return self.cache

    def check_owner(self, owner: object) -> None:
        if self.owner is not owner:
            raise RuntimeError("this verifier session's static KV cache was claimed by a newer session; "
                               "a session is valid until the next prefill over the same model")

    def fit(self, owner: object, length: int, extra: int) -> Cache:
        """The owner's cache, grown (keys and values copied once) if `extra` positions after
        `length` would not fit."""
        self.check_owner(owner)
        if length + extra > self.capacity:
            old, self.cache = self.cache, self._allocate(length + extra)
            for new_layer, old_layer in zip(self.cache.layers, old.layers):
                new_layer.update(old_layer.keys[:, :, :length], old_layer.values[:, :, :length])
        return self.cache


_STATIC_CACHES: "weakref.WeakKeyDictionary[OpenVLA, dict[bool, StaticKVCache]]" = weakref.WeakKeyDictionary()


def static_kv_cache(model: OpenVLA, compiled: bool = False) -> StaticKVCache:
    """The StaticKVCache of this loaded model, with compiled passes or without (made at the first call)."""
    caches = _STATIC_CACHES.setdefault(model, {})
    if compiled not in caches:
        caches[compiled] = StaticKVCache(model, compiled=compiled)
    return caches[compiled]


class VerifierSession:
    def __init__(self, model: OpenVLA, kv_cache: "str | StaticKVCache" = "dynamic", compiled: bool = False):
        """`kv_cache`: "dynamic", "static" (the model's StaticKVCache) or a StaticKVCache of this
        model; `compiled`: the model's StaticKVCache with compiled passes (whatever `kv_cache` says)."""
        if not isinstance(kv_cache, StaticKVCache) and kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
        self.model = model
        self.static = static_kv_cache(model, compiled=True) if compiled else \
            kv_cache if isinstance(kv_cache, StaticKVCache) else \
            static_kv_cache(model) if kv_cache == "static" else None
        self.cache: Cache | None = None
        self.passes = 0
        self.tree: tuple[int, list[int]] | None = None    # (prefix length, parents) of the last tree pass

    @property
    def kv_cache(self) -> str:
        return "dynamic" if self.static is None else "static"

    @property
    def length(self) -> int:
        return 0 if self.cache is None else int(self.cache.get_seq_length())

    @torch.inference_mode()
    def prefill(self, pixel_values: torch.Tensor, prompt_ids: list[int], proposals: list[int] = (),
                parents: list[int] | None = None) -> VerifierStep:
        """Image + prompt (+ optional proposed action tokens, verified in the same pass). With
        `parents`, the proposals are a tree after the prompt (see the module doc; -1: follows the
        prompt's last position), and `keep_path` keeps one of its paths."""
        device = self.model.projector.fc1.weight.device
        ids = torch.tensor([list(prompt_ids) + list(proposals)], device=device)
        embeds = self.model.embed_inputs(pixel_values.unsqueeze(0).to(device), ids)
        self.tree = None
        self.cache = DynamicCache() if self.static is None else self.static.claim(self, embeds.shape[1])
        if parents is None:
            return self._forward(embeds, num_logits=1 + len(proposals))
        prompt_length = embeds.shape[1] - len(proposals)          # BOS, patches, prompt tokens
        check_tree(parents, len(proposals))
        # the prompt is a chain, the proposals a tree hanging from its last position
        whole = list(range(-1, prompt_length - 1)) + [prompt_length - 1 if parent < 0 else prompt_length + parent
                                                      for parent in parents]
        step = self._forward(embeds, 1 + len(proposals), tree_attention_mask(0, whole, device),
                             tree_position_ids(0, whole, device))
        self.tree = (prompt_length, list(parents))
        return step

    @torch.inference_mode()
    def extend(self, token_ids: list[int]) -> VerifierStep:
        """Append tokens to the cache; logits for every one of them (the next-token predictions)."""
        if self.cache is None:
            raise RuntimeError("extend() before prefill()")
        self.tree = None
        ids = torch.tensor([list(token_ids)], device=self.model.projector.fc1.weight.device)
        return self._forward(self.model.embed_tokens(ids), num_logits=len(token_ids))

    @torch.inference_mode()
    def verify_tree(self, token_ids: list[int], parents: list[int]) -> VerifierStep:
        """One pass over a token tree after the cache (see the module doc); logits row i is the
        prediction after node i. Then `keep_path` (or `truncate`) before the next pass."""
        if self.cache is None:
            raise RuntimeError("verify_tree() before prefill()")
        check_tree(parents, len(token_ids))
        device = self.model.projector.fc1.weight.device
        prefix = self.length
        ids = torch.tensor([list(token_ids)], device=device)
        step = self._forward(self.model.embed_tokens(ids), len(token_ids), tree_attention_mask(prefix, parents, device),
                             tree_position_ids(prefix, parents, device))
        self.tree = (prefix, list(parents))
        return step

    @torch.inference_mode()
    def keep_path(self, path: list[int]) -> None:
        """After a tree pass: keep the prefix and the nodes `path` (a root-to-node path of that
        tree, root first; [] keeps the prefix alone), their keys and values moved in place to the
        positions after the prefix; every other node is dropped."""
        if self.tree is None:
            raise RuntimeError("keep_path() without a tree pass before it")
        prefix, parents = self.tree
        check_path(path, parents)
        if self.static is not None:
            self.static.check_owner(self)
        for layer in self.cache.layers:
            move_positions_(layer.keys, prefix, path)
            move_positions_(layer.values, prefix, path)
        self.tree = None
        self.truncate(prefix + len(path))

    @torch.inference_mode()
    def truncate(self, length: int) -> None:
        """Roll the KV cache back to its first `length` positions (rejected proposals)."""
        if self.static is not None:
            self.static.check_owner(self)
        if length < self.length:
            self.cache.crop(length - self.length)       # transformers 5: a negative count removes tokens

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean [1, 1, q, kv] mask as the model's attention takes it: sdpa reads booleans,
        the eager path adds the mask to its scores."""
        if self.model.language_model.config._attn_implementation == "sdpa":
            return allowed
        dtype = self.model.language_model.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)

    def _forward(self, embeds: torch.Tensor, num_logits: int, allowed: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> VerifierStep:
        """One pass over `embeds` after the cache; `allowed` ([1, 1, n, prefix + n] boolean, a tree's)
        and `position_ids` default to a chain's (causal, positions after the prefix), built by
        transformers. A static cache attending over its whole length gets both explicitly, `allowed`
        padded with False over the unused positions."""
        language_model, count, bucket = self.model.language_model, embeds.shape[1], None
        if self.static is not None:
            prefix = self.length
            if self.static.compiled is not None:
                bucket = bucket_for(count) if prefix > 0 else prefill_bucket(count)
            self.cache = self.static.fit(self, prefix, bucket or count)
            if self.static.whole_length:          # fixed shapes: the mask covers every preallocated position
                if allowed is None:
                    allowed = chain_attention_mask(prefix, count, embeds.device)
                    position_ids = torch.arange(prefix, prefix + count, device=embeds.device)[None]
                allowed = torch.nn.functional.pad(allowed, (0, self.static.capacity - allowed.shape[-1]), value=False)
        mask = None if allowed is None else self._mask(allowed)
        if bucket is not None:
            hidden = self.static.compiled.run(embeds, mask, position_ids, prefix, bucket)[0]
        else:
            hidden = language_model.model(inputs_embeds=embeds, cache=self.cache, use_cache=True,
                                          attention_mask=mask, position_ids=position_ids).last_hidden_state[0]
        self.passes += 1
        weight = language_model.lm_head.weight
        if weight.device.type == "cpu":             # rows computed when the decoder asks for them
            return VerifierStep(hidden, embeds[0], lm_head_weight=weight, num_logits=num_logits)
        return VerifierStep(hidden, embeds[0], logits=lm_head_logits(weight, hidden[-num_logits:]))


# --- token trees: mask, positions, compaction (plain tensors, for any KV cache) -------------------

def tree_position_ids(prefix_length: int, parents: list[int], device=None) -> torch.Tensor:
    """[1, n] position ids: prefix length + depth (a path's nodes sit where a chain would put them)."""
    return (prefix_length + torch.tensor(tree_depths(parents), dtype=torch.long, device=device))[None]


def chain_attention_mask(prefix_length: int, count: int, device=None) -> torch.Tensor:
    """[1, 1, n, prefix + n] boolean: a chain's (causal) mask, the tree mask of parents i - 1."""
    return torch.ones(count, prefix_length + count, dtype=torch.bool, device=device).tril(prefix_length)[None, None]


def tree_attention_mask(prefix_length: int, parents: list[int], device=None) -> torch.Tensor:
    """[1, 1, n, prefix + n] boolean: node i attends to every prefix position, its ancestors and itself."""
    count = len(parents)
    allowed = torch.zeros(count, prefix_length + count, dtype=torch.bool)
    allowed[:, :prefix_length] = True
    for index, parent in enumerate(parents):
        if parent >= 0:
            allowed[index, prefix_length:] = allowed[parent, prefix_length:]
        allowed[index, prefix_length + index] = True
    return allowed.to(device)[None, None]


def check_path(path: list[int], parents: list[int]) -> None:
    """ValueError unless `path` is a root-to-node path of the tree: its first node follows the
    prefix (parent -1) and each next one is a child of the one before."""
    for index, node in enumerate(path):
        expected = path[index - 1] if index else -1
        if not (isinstance(node, int) and 0 <= node < len(parents)) or parents[node] != expected:
            raise ValueError(f"path {list(path)} is not a root-to-node path of the tree (node {node!r} should "
                             f"be a child of {'the prefix' if expected < 0 else expected})")


def move_positions_(cache: torch.Tensor, prefix_length: int, path: list[int]) -> None:
    """In place, on a [..., positions, d] key or value tensor: the tree nodes `path` (indices after
    the prefix) move to positions prefix_length, prefix_length + 1, ...; what follows them is left
    for the caller to drop (DynamicCache.crop, or a static cache's length)."""
    if not path or list(path) == list(range(len(path))):
        return                                            # already in place
    source = torch.tensor([prefix_length + node for node in path], device=cache.device)
    cache[..., prefix_length:prefix_length + len(path), :] = cache.index_select(-2, source)


def lm_head_logits(weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """[vocab, H] lm_head weight, [n, H] hidden states -> [n, vocab] float32 logits.

    The same product as `lm_head(hidden)`. On the CPU, PyTorch's fp32 `linear` against the
    32064-row head is slow for a few rows, while `weight @ hidden.T` reads the weight once for any
    number of rows from two on (timings of both: scripts/draft_costs.py, quoted in the README); a
    single row is computed as two (itself, twice) to stay on that path. Every pass, whatever its length, so uses one kernel for its
    logits. On CUDA, `linear` as it is."""
    if weight.device.type != "cpu":
        return torch.nn.functional.linear(hidden, weight).float()
    rows = hidden if hidden.shape[0] > 1 else hidden.repeat(2, 1)
    return (weight @ rows.T).T[:hidden.shape[0]].float()
