#!/usr/bin/env python
"""What the static KV cache costs on the CPU against transformers' DynamicCache (issue #26 item 1:
"on the CPU it must give the same tokens as today's dynamic path and cost no more").

On the decode benchmark's default sample (spec-vla-bench decode: 12 synthetic scenes x 5 control
steps), miniature verifier, fp32, CPU, one torch thread, each configuration decoded with both
caches, interleaved observation by observation: AR, and strict speculative decoding with the
packaged mamba draft (chain of 4) and the llama draft (chain of 4, and hybrid:50 tree; its head's
own cache follows the verifier's: a StaticLlamaCache with "static"). Per configuration and
cache: mean and median ms per action, verifier passes, and the share of actions whose tokens equal
the dynamic cache's (strict: both are AR up to near-ties).

    nice -n 10 .venv/bin/python scripts/kv_cache_costs.py --out docs/kv_cache

writes kv_cache_costs.json and kv_cache_costs.md under --out. Times are the thread's CPU time
(time.thread_time), so other processes on a shared machine count less; the output says where it ran.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from spec_vla_ros.benchmarks.decode import observations
from spec_vla_ros.commands.benchmarks.decode import BENCH_EPISODES, BENCH_SEED, BENCH_STEPS_PER_EPISODE
from spec_vla_ros.decoding.acceptance import STRICT
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.registry import load_draft
from spec_vla_ros.decoding.spec import parse_tree_shape
from spec_vla_ros.vla.miniature import build_miniature
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import KV_CACHES

CONFIGURATIONS = {"ar": (None, 1, None), "mamba chain:4": ("mamba", 4, None), "llama chain:4": ("llama", 4, None),
                  "llama hybrid:50": ("llama", 4, parse_tree_shape("hybrid:50"))}


def decoders(verifier) -> dict:
    made = {}
    for name, (kind, k, tree) in CONFIGURATIONS.items():
        for kv_cache in KV_CACHES:
            draft = load_draft(kind, "", verifier) if kind else None
            made[(name, kv_cache)] = Decoder(verifier.model, draft, k, STRICT, tree=tree, kv_cache=kv_cache)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    verifier = build_miniature()
    made = decoders(verifier)
    inputs = [(episode, pixel_values(frame, True, verifier.image_normalization),
               prompt_token_ids(verifier.tokenizer, instruction))
              for episode, instruction, frame in observations(BENCH_EPISODES, BENCH_STEPS_PER_EPISODE, BENCH_SEED)]
    for decoder in made.values():
        for _, pixels, prompt in inputs[:args.warmup]:
            decoder.decode(pixels, prompt)
    records = {key: [] for key in made}
    previous = None
    for episode, pixels, prompt in inputs:
        for key, decoder in made.items():
            if episode != previous:
                decoder.reset_episode()
            start = time.thread_time()
            tokens, stats = decoder.decode(pixels, prompt)
            records[key].append((tokens, stats.verifier_passes, (time.thread_time() - start) * 1e3))
        previous = episode
    rows = []
    for name in CONFIGURATIONS:
        dynamic = records[(name, "dynamic")]
        for kv_cache in KV_CACHES:
            mine = records[(name, kv_cache)]
            ms = np.array([entry[2] for entry in mine])
            rows.append({"configuration": name, "kv_cache": kv_cache, "actions": len(mine),
                         "ms_mean": float(ms.mean()), "ms_median": float(np.median(ms)),
                         "passes_per_action": float(np.mean([entry[1] for entry in mine])),
                         "same_tokens_as_dynamic": float(np.mean([a[0] == b[0] for a, b in zip(mine, dynamic)]))})
        rows[-1]["ms_mean_of_dynamic"] = rows[-1]["ms_mean"] / rows[-2]["ms_mean"]
    result = {"script": "scripts/kv_cache_costs.py", "verifier": "miniature-seed0 (random weights), fp32",
              "device": f"cpu ({platform.processor() or platform.machine()}), 1 torch thread, thread CPU time",
              "torch": torch.__version__, "sample": f"{BENCH_EPISODES} episodes x {BENCH_STEPS_PER_EPISODE} steps, "
                                                     f"seed {BENCH_SEED}", "rows": rows}
    lines = ["| configuration | KV cache | ms/action mean | median | passes/action | same tokens as dynamic |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ratio = f" ({row['ms_mean_of_dynamic']:.2f}x)" if "ms_mean_of_dynamic" in row else ""
        lines.append(f"| {row['configuration']} | {row['kv_cache']} | {row['ms_mean']:.1f}{ratio} | "
                     f"{row['ms_median']:.1f} | {row['passes_per_action']:.2f} | {row['same_tokens_as_dynamic']:.0%} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kv_cache_costs.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "kv_cache_costs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
