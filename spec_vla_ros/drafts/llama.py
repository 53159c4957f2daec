"""Llama sequence core for the EAGLE-style draft head: one transformers `LlamaDecoderLayer`.

This is Spec-VLA's / EAGLE's draft. Its state is a KV cache; rollback truncates it. The layer
takes the verifier's attention and MLP shapes, so the draft costs about one verifier layer. A
draft tree appends each level's rows to the cache under a tree attention mask (each row sees the
committed positions, its drafted ancestors and itself, at position = depth), as EAGLE-2 drafts;
rolling back to the committed length drops them.

Two caches (issue #26): transformers' DynamicCache, a new one per action that grows by
concatenation (the default), or a StaticLlamaCache, preallocated once per draft and reused by
every action: a write lands at the current length, a rollback moves the length, and attention
reads the whole preallocated length under an explicit mask, so a one-token step has the same
shapes and addresses at every position: what a compiled step (a CUDA graph on CUDA) needs. Both
give the same outputs up to float32 noise (test_static_cache.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Cache, DynamicCache, LlamaConfig
from transformers.cache_utils import StaticLayer
from transformers.models.llama.modeling_llama import (LlamaDecoderLayer, LlamaRotaryEmbedding, apply_rotary_pos_emb,
                                                      rotate_half)

# Verifier text-config fields that define the draft layer (everything else keeps Llama defaults).
LAYER_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "rms_norm_eps", "rope_theta", "rope_parameters", "max_position_embeddings", "head_dim")


def layer_config(verifier_config: LlamaConfig) -> dict:
    """The JSON-safe subset of the verifier's Llama config that the draft layer copies."""
    config = verifier_config.to_dict()
    return {name: config[name] for name in LAYER_FIELDS if config.get(name) is not None}


class StaticLlamaCache(Cache):
    """The Llama core's keys and values, preallocated (one transformers StaticLayer) for
    `capacity` positions rounded up to GROWTH. `reserve` grows it, keys and values copied once,
    where a write would not fit (a longer prompt window, a wide draft tree); the draft reserves
    room for a chain's steps before it runs them, as a compiled step cannot grow it."""

    GROWTH = 64

    def __init__(self, capacity: int, num_heads: int, head_dim: int, dtype: torch.dtype, device):
        super().__init__(layers=[StaticLayer(max_cache_len=self._rounded(capacity))])
        self.early_initialization(1, num_heads, head_dim, dtype, device)

    @classmethod
    def _rounded(cls, capacity: int) -> int:
        return -(-max(capacity, 1) // cls.GROWTH) * cls.GROWTH

    @property
    def capacity(self) -> int:
        return self.layers[0].max_cache_len

    @property
    def length(self) -> int:
        return int(self.layers[0].cumulative_length)

    def clear(self) -> "StaticLlamaCache":
        """Length 0 (the old contents stay, masked, and are overwritten)."""
        self.layers[0].cumulative_length.zero_()
        return self

    def reserve(self, extra: int) -> None:
        """Room for `extra` more positions: a larger allocation if they do not fit, the written
        keys and values copied into it (the same cache object: references to it stay valid)."""
        layer, length = self.layers[0], self.length
        if length + extra <= layer.max_cache_len:
            return
        capacity = self._rounded(length + extra)
        for name in ("keys", "values"):
            old = getattr(layer, name)
            new = old.new_zeros(old.shape[:2] + (capacity,) + old.shape[3:])
            new[:, :, :length] = old[:, :, :length]
            torch._dynamo.mark_static_address(new)
            setattr(layer, name, new)
        layer.max_cache_len = capacity

    def attended(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean [1, 1, l, written] mask over the written positions -> over the whole
        preallocated length (the positions after them masked)."""
        return F.pad(allowed, (0, self.capacity - allowed.shape[-1]), value=False)


def cache_length(cache: Cache) -> int:
    """Positions in a DynamicCache or a StaticLlamaCache, as an int."""
    return int(cache.get_seq_length())


class LlamaCore(nn.Module):
    kind = "llama"

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        llama_config = LlamaConfig(**config, num_hidden_layers=1)
        llama_config._attn_implementation = "sdpa"
        self.layer = LlamaDecoderLayer(llama_config, layer_idx=0)
        self.rotary_emb = LlamaRotaryEmbedding(llama_config)

    def to_dict(self) -> dict:
        return dict(self.config)

    def static_cache(self, capacity: int, dtype: torch.dtype, device) -> StaticLlamaCache:
        """An empty StaticLlamaCache for this layer's keys and values."""
        attention = self.layer.self_attn
        return StaticLlamaCache(capacity, attention.config.num_key_value_heads, attention.head_dim, dtype, device)

    def forward(self, hidden: torch.Tensor, state: Cache | None = None, mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None):
        """[b, l, hidden] after the cached positions (None: a new DynamicCache) -> output, cache. By
        default causal, at the positions after the cache; or under a boolean `mask` [1, 1, l, past
        + l] at `positions` [1, l] (a draft tree's level)."""
        cache = DynamicCache() if state is None else state
        past, length = cache_length(cache), hidden.shape[1]
        if positions is None:
            positions = torch.arange(past, past + length, device=hidden.device).unsqueeze(0)
        if mask is None:
            # Explicit causal mask: attention layers alone do not offset `is_causal` by the cache length.
            mask = torch.ones(length, past + length, dtype=torch.bool, device=hidden.device).tril(past)[None, None]
        if isinstance(cache, StaticLlamaCache):
            cache.reserve(length)
            mask = cache.attended(mask)
        out = self.layer(hidden, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                         position_embeddings=self.rotary_emb(hidden, positions))
        return out, cache

    def step_rows(self, hidden: torch.Tensor, state: Cache) -> tuple[torch.Tensor, Cache]:
        """One position, [1, hidden] after the cached positions -> output [1, hidden], cache: `forward`
        for a single token, reading the same weights with fewer calls (a lone query attends to every
        cached position, so no mask). A draft's proposal step on the CPU spends much of its time in
        dispatch, not arithmetic. A StaticLlamaCache must have room for it (`reserve`); its position
        and mask are read from the cache's length tensor, so every step is the same graph."""
        layer, attention, mlp = self.layer, self.layer.self_attn, self.layer.mlp
        static = isinstance(state, StaticLlamaCache)
        if static:
            written = state.layers[0].cumulative_length               # a tensor, moved by update below
            position = written.view(1, 1).clone()
        else:
            position = torch.tensor([[cache_length(state)]], device=hidden.device)
        cos, sin = self.rotary_emb(hidden, position)
        norm = layer.input_layernorm
        x = F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
        heads = (1, -1, 1, attention.head_dim)                                   # [1, heads, 1, head_dim]
        query = F.linear(x, attention.q_proj.weight, attention.q_proj.bias).view(heads)
        key = F.linear(x, attention.k_proj.weight, attention.k_proj.bias).view(heads)
        value = F.linear(x, attention.v_proj.weight, attention.v_proj.bias).view(heads)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        keys, values = state.update(key, value, 0)
        mask = (torch.arange(keys.shape[2], device=keys.device) < written)[None, None, None] if static else None
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=attention.scaling,
                                             enable_gqa=attention.num_key_value_groups > 1)
        hidden = hidden + F.linear(out.reshape(1, -1), attention.o_proj.weight, attention.o_proj.bias)
        norm = layer.post_attention_layernorm
        x = F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
        x = mlp.act_fn(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias)) * F.linear(x, mlp.up_proj.weight,
                                                                                           mlp.up_proj.bias)
        return hidden + F.linear(x, mlp.down_proj.weight, mlp.down_proj.bias), state

    def absorb(self, hidden: torch.Tensor, state: Cache | None = None) -> Cache:
        """[l, hidden] positions after the cached ones (None: a new DynamicCache) whose outputs nobody
        reads (a draft's prompt window, accepted tokens read again) -> the cache with them. The layer
        is the head's only one, so they need only their keys and values, not attention or MLP."""
        cache = DynamicCache() if state is None else state
        past, length = cache_length(cache), hidden.shape[0]
        if isinstance(cache, StaticLlamaCache):
            cache.reserve(length)
        attention, norm = self.layer.self_attn, self.layer.input_layernorm
        cos, sin = self.rotary_emb(hidden, torch.arange(past, past + length, device=hidden.device)[None])
        x = F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
        heads = (1, length, -1, attention.head_dim)
        key = F.linear(x, attention.k_proj.weight, attention.k_proj.bias).view(heads).transpose(1, 2)
        value = F.linear(x, attention.v_proj.weight, attention.v_proj.bias).view(heads).transpose(1, 2)
        key = key * cos.unsqueeze(1) + rotate_half(key) * sin.unsqueeze(1)      # rotary, as on the keys in forward
        cache.update(key, value, 0)
        return cache

    @staticmethod
    def begin_branches(state: Cache) -> "LlamaBranches":
        """A draft tree's branches from the cache (its last position the tree's root)."""
        length = cache_length(state)
        return LlamaBranches(state, length, length, [[]])

    def step_branches(self, hidden: torch.Tensor, branches: "LlamaBranches", rows: list[int]):
        """One level of a draft tree: row i of `hidden` [n, hidden] continues branch `rows[i]` (a row
        of the previous level) -> outputs [n, hidden] and the level's branches. The rows are
        appended to the cache; each attends to the committed positions, its ancestors and itself."""
        cache, base = branches.cache, branches.base
        past, count = cache_length(cache), hidden.shape[0]
        ancestors = [branches.ancestors[row] + [past + index] for index, row in enumerate(rows)]
        mask = torch.zeros(count, past + count, dtype=torch.bool)
        mask[:, :base] = True
        for index, slots in enumerate(ancestors):
            mask[index, slots] = True
        positions = torch.full((1, count), branches.position, dtype=torch.long, device=hidden.device)
        out, cache = self(hidden[None], cache, mask.to(hidden.device)[None, None], positions)
        return out[0], LlamaBranches(cache, base, branches.position + 1, ancestors)

    @staticmethod
    def snapshot(state: Cache) -> int:
        return cache_length(state)

    @staticmethod
    def restore(state: Cache, snapshot: int) -> Cache:
        """Back to `snapshot` positions: a DynamicCache is cropped, a static one's length moved."""
        length = cache_length(state)
        if length > snapshot:
            state.crop(snapshot - length)
        return state


@dataclass(frozen=True)
class LlamaBranches:
    """A draft tree's branches in the Llama core's cache: `base` committed positions (the tree's
    root last), the next level's `position`, and per branch the cache slots of its drafted
    ancestors and itself."""
    cache: Cache
    base: int
    position: int
    ancestors: list
