"""Verifier passes compiled with torch.compile, one graph per pass-length bucket (issue #26 item 2).

A decoder's passes after the prompt are short (the pending token and a draft's proposals: 1 to
k + 1 positions for a chain, up to a tree's node budget) and there are ~7 of them per action, so
on a GPU their cost is launching the model's ~1,300 kernels, not reading its weights. Compiled
with `mode="reduce-overhead"` (inductor, replayed as CUDA graphs), a pass is one graph launch.
Graphs need fixed shapes and addresses, so compiled passes run over a StaticKVCache that attends
over its whole preallocated length (explicit mask and positions, vla/session.py), and a pass of n
positions is padded to the next of PASS_BUCKETS: the padding positions attend only to themselves,
their keys and values land after the real ones and are dropped at once (the cache's length moves
back), and no real position attends to them. So each bucket compiles once. A prefill (image
patches, prompt and the early guess: one per action, its length set by the instruction) is padded
the same way to the next multiple of PREFILL_BUCKET. `warm_up` compiles the pass buckets and the
prefill buckets of prompts up to WARM_UP_PROMPT_MARGIN tokens shorter or longer than its own
before the first action; passes longer than the last bucket run eagerly over the same cache.

On the CPU the same code runs with torch.compile's "eager" backend: it traces every pass as one
graph (fullgraph: a graph break is an error) and runs it without code generation, which is what
the CPU tests check; it is not faster there, so `compile="auto"` (compile_on) compiles on CUDA only
and `compile="always"` everywhere.
"""
from __future__ import annotations

import time

import torch

from .constants import COMPILE_MODES

PASS_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
PREFILL_BUCKET = 32              # prefill lengths padded to a multiple of this: one graph per 32 positions
WARM_UP_PROMPT_MARGIN = 32       # warm-up: prefill buckets for prompts this many tokens shorter or longer
# torch.compile keeps the graphs of one function's code together, whatever object it is bound to: every
# bucket of every loaded model (and each new cache allocation) is one more. Its default of 8 would make the
# ninth a hard error under fullgraph.
RECOMPILE_LIMIT = 256


def compile_on(mode: str, device) -> bool:
    """Whether the `compile` setting `mode` (COMPILE_MODES) compiles the verifier's passes on `device`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode == "always" or (mode == "auto" and torch.device(device).type == "cuda")


def bucket_for(count: int) -> int | None:
    """The smallest bucket holding `count` positions (None: longer than every bucket: eager)."""
    return next((bucket for bucket in PASS_BUCKETS if bucket >= count), None)


def prefill_bucket(count: int) -> int:
    """The prefill length a prefill of `count` positions is padded to."""
    return -(-count // PREFILL_BUCKET) * PREFILL_BUCKET


def compile_for(function, device, backend: str | None = None):
    """torch.compile of `function` as the verifier's passes are compiled: one graph (fullgraph),
    static shapes; `backend` default: inductor replayed as CUDA graphs (mode reduce-overhead) on
    CUDA, "eager" (tracing only) on the CPU. -> (compiled function, backend)."""
    device = torch.device(device)
    if backend is None:
        backend = "inductor" if device.type == "cuda" else "eager"
    options = {"mode": "reduce-overhead"} if backend == "inductor" and device.type == "cuda" else {}
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                           RECOMPILE_LIMIT)
    return torch.compile(function, backend=backend, fullgraph=True, dynamic=False, **options), backend


class CompiledPasses:
    """The language model's forward over a static cache, compiled per bucket (a pass's or a prefill's): `run(embeds, allowed,
    positions)` with `allowed` [1, 1, n, capacity] and `positions` [1, n] as the static cache builds
    them, -> hidden [1, n, H] (a copy: a CUDA graph's output is overwritten by its next replay)."""

    def __init__(self, language_model, static, backend: str | None = None):
        """`backend`: torch.compile's; default: inductor with mode reduce-overhead (CUDA graphs) on
        CUDA, "eager" (tracing only) on the CPU."""
        self.language_model, self.static = language_model, static
        self.compiled, self.backend = compile_for(self._forward, language_model.lm_head.weight.device, backend)
        self.buckets_run: set[int] = set()

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.language_model.model(inputs_embeds=embeds, cache=self.static.cache, use_cache=True,
                                         attention_mask=mask, position_ids=positions).last_hidden_state

    def run(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, prefix: int,
            bucket: int) -> torch.Tensor:
        """One pass of n real positions after `prefix` cached ones, padded to `bucket`; the cache
        keeps only the real ones."""
        count = embeds.shape[1]
        padding = bucket - count
        if padding:
            embeds = torch.cat([embeds, embeds.new_zeros(1, padding, embeds.shape[2])], dim=1)
            positions = torch.cat([positions, positions[:, -1:].expand(1, padding)], dim=1)
            mask = pad_query_rows(mask, prefix + count, padding)
        hidden = self.compiled(embeds, mask, positions)[:, :count].clone()
        if padding:
            self.static.cache.crop(-padding)
        self.buckets_run.add(bucket)
        return hidden


def pad_query_rows(mask: torch.Tensor, first_key: int, padding: int) -> torch.Tensor:
    """[1, 1, n, kv] mask of n real queries (boolean, or additive float) -> [1, 1, n + padding, kv]:
    padding query i attends only to its own key, at `first_key` + i (right after the real ones), so
    no row is empty; no real row attends to a padding position (those columns are masked already)."""
    extra = torch.zeros(1, 1, padding, mask.shape[-1], dtype=torch.bool, device=mask.device)
    extra[0, 0, torch.arange(padding), first_key + torch.arange(padding)] = True
    if mask.dtype != torch.bool:
        extra = torch.zeros(extra.shape, dtype=mask.dtype, device=mask.device).masked_fill(
            ~extra, torch.finfo(mask.dtype).min)
    return torch.cat([mask, extra], dim=2)


def warm_up(session, pixel_values: torch.Tensor, prompt_ids: list[int], largest: int) -> float:
    """Compile, with this observation, the prefill buckets of prompts up to WARM_UP_PROMPT_MARGIN
    tokens shorter or longer than `prompt_ids` (with an early guess of up to `largest` positions),
    then every pass bucket up to the one holding `largest` positions; -> seconds. The longest
    prefill runs first: it sizes the static cache, whose capacity every graph's shapes include.
    Nothing of it stays in the cache."""
    start = time.perf_counter()
    words = list(prompt_ids[1:]) or list(prompt_ids)

    def prompt_of(count: int) -> list[int]:             # `count` ids: BOS, then the prompt's words again
        return list(prompt_ids[:1]) + (words * (1 + count // len(words)))[:count - 1]

    longest = len(prompt_ids) + WARM_UP_PROMPT_MARGIN + largest
    session.prefill(pixel_values, prompt_of(longest))
    image = session.length - longest                    # the positions the image adds
    for bucket in warm_up_prefill_buckets(image, len(prompt_ids), largest)[1:]:
        session.prefill(pixel_values, prompt_of(bucket - image))
    session.prefill(pixel_values, prompt_ids)
    length = session.length
    last = bucket_for(largest) or PASS_BUCKETS[-1]
    for bucket in PASS_BUCKETS:
        if bucket > last:
            break
        session.extend([prompt_ids[-1]] * bucket)
        session.truncate(length)
    return time.perf_counter() - start


def warm_up_prefill_buckets(image_positions: int, prompt_length: int, largest: int) -> list[int]:
    """The prefill buckets `warm_up` compiles, longest first: prompts up to WARM_UP_PROMPT_MARGIN
    tokens shorter or longer than `prompt_length`, with an early guess of up to `largest` positions."""
    shortest = image_positions + max(1, prompt_length - WARM_UP_PROMPT_MARGIN)
    longest = image_positions + prompt_length + WARM_UP_PROMPT_MARGIN + largest
    return list(range(prefill_bucket(longest), prefill_bucket(shortest) - 1, -PREFILL_BUCKET))

