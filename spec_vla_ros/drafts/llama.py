"""Llama sequence core for the EAGLE-style draft head: one transformers `LlamaDecoderLayer`.

This is Spec-VLA's / EAGLE's draft. Its state is a KV cache; rollback truncates it. The layer
takes the verifier's attention and MLP shapes, so the draft costs about one verifier layer. A
draft tree appends each level's rows to the cache under a tree attention mask (each row sees the
committed positions, its drafted ancestors and itself, at position = depth), as EAGLE-2 drafts;
rolling back to the committed length drops them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import (LlamaDecoderLayer, LlamaRotaryEmbedding, apply_rotary_pos_emb,
                                                      rotate_half)

# Verifier text-config fields that define the draft layer (everything else keeps Llama defaults).
LAYER_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "rms_norm_eps", "rope_theta", "rope_parameters", "max_position_embeddings", "head_dim")


def layer_config(verifier_config: LlamaConfig) -> dict:
    """The JSON-safe subset of the verifier's Llama config that the draft layer copies."""
    config = verifier_config.to_dict()
    return {name: config[name] for name in LAYER_FIELDS if config.get(name) is not None}


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

    def forward(self, hidden: torch.Tensor, state: DynamicCache | None = None, mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None):
        """[b, l, hidden] after the cached positions (None: a new sequence) -> output, cache. By
        default causal, at the positions after the cache; or under a boolean `mask` [1, 1, l, past
        + l] at `positions` [1, l] (a draft tree's level)."""
        cache = DynamicCache() if state is None else state
        past, length = cache.get_seq_length(), hidden.shape[1]
        if positions is None:
            positions = torch.arange(past, past + length, device=hidden.device).unsqueeze(0)
        if mask is None:
            # Explicit causal mask: attention layers alone do not offset `is_causal` by the cache length.
            mask = torch.ones(length, past + length, dtype=torch.bool, device=hidden.device).tril(past)[None, None]
        out = self.layer(hidden, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                         position_embeddings=self.rotary_emb(hidden, positions))
        return out, cache

    def step_rows(self, hidden: torch.Tensor, state: DynamicCache) -> tuple[torch.Tensor, DynamicCache]:
        """One position, [1, hidden] after the cached positions -> output [1, hidden], cache: `forward`
        for a single token, reading the same weights with fewer calls (a lone query attends to every
        cached position, so no mask). A draft's proposal step on the CPU spends much of its time in
        dispatch, not arithmetic."""
        layer, attention, mlp = self.layer, self.layer.self_attn, self.layer.mlp
        past = state.get_seq_length()
        cos, sin = self.rotary_emb(hidden, torch.tensor([[past]], device=hidden.device))
        norm = layer.input_layernorm
        x = F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
        heads = (1, -1, 1, attention.head_dim)                                   # [1, heads, 1, head_dim]
        query = F.linear(x, attention.q_proj.weight, attention.q_proj.bias).view(heads)
        key = F.linear(x, attention.k_proj.weight, attention.k_proj.bias).view(heads)
        value = F.linear(x, attention.v_proj.weight, attention.v_proj.bias).view(heads)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        keys, values = state.update(key, value, 0)
        out = F.scaled_dot_product_attention(query, keys, values, scale=attention.scaling,
                                             enable_gqa=attention.num_key_value_groups > 1)
        hidden = hidden + F.linear(out.reshape(1, -1), attention.o_proj.weight, attention.o_proj.bias)
        norm = layer.post_attention_layernorm
        x = F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
        x = mlp.act_fn(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias)) * F.linear(x, mlp.up_proj.weight,
                                                                                           mlp.up_proj.bias)
        return hidden + F.linear(x, mlp.down_proj.weight, mlp.down_proj.bias), state

    def absorb(self, hidden: torch.Tensor, state: DynamicCache | None = None) -> DynamicCache:
        """[l, hidden] positions after the cached ones (None: a new sequence) whose outputs nobody
        reads (a draft's prompt window, accepted tokens read again) -> the cache with them. The layer
        is the head's only one, so they need only their keys and values, not attention or MLP."""
        cache = DynamicCache() if state is None else state
        past, length = cache.get_seq_length(), hidden.shape[0]
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
    def begin_branches(state: DynamicCache) -> "LlamaBranches":
        """A draft tree's branches from the cache (its last position the tree's root)."""
        length = state.get_seq_length()
        return LlamaBranches(state, length, length, [[]])

    def step_branches(self, hidden: torch.Tensor, branches: "LlamaBranches", rows: list[int]):
        """One level of a draft tree: row i of `hidden` [n, hidden] continues branch `rows[i]` (a row
        of the previous level) -> outputs [n, hidden] and the level's branches. The rows are
        appended to the cache; each attends to the committed positions, its ancestors and itself."""
        cache, base = branches.cache, branches.base
        past, count = cache.get_seq_length(), hidden.shape[0]
        ancestors = [branches.ancestors[row] + [past + index] for index, row in enumerate(rows)]
        mask = torch.zeros(count, past + count, dtype=torch.bool)
        mask[:, :base] = True
        for index, slots in enumerate(ancestors):
            mask[index, slots] = True
        positions = torch.full((1, count), branches.position, dtype=torch.long, device=hidden.device)
        out, cache = self(hidden[None], cache, mask.to(hidden.device)[None, None], positions)
        return out[0], LlamaBranches(cache, base, branches.position + 1, ancestors)

    @staticmethod
    def snapshot(state: DynamicCache) -> int:
        return state.get_seq_length()

    @staticmethod
    def restore(state: DynamicCache, snapshot: int) -> DynamicCache:
        if state.get_seq_length() > snapshot:
            state.crop(snapshot - state.get_seq_length())
        return state


@dataclass(frozen=True)
class LlamaBranches:
    """A draft tree's branches in the Llama core's cache: `base` committed positions (the tree's
    root last), the next level's `position`, and per branch the cache slots of its drafted
    ancestors and itself."""
    cache: DynamicCache
    base: int
    position: int
    ancestors: list
