#!/usr/bin/env python
"""Can a CPU miniature have OpenVLA-7B's proportions? (the README section of that name)

Builds, with random fp32 weights on the CPU, the default miniature and miniatures at OpenVLA-7B's
depths (DINOv2 ViT-L: 24 blocks, MLP ratio 4; SigLIP so400m: 27 blocks, MLP ratio 3.7362; Llama-2:
32 layers, MLP ratio 11008/4096) at narrower widths, and times each with the decode benchmark's
`time_architecture` (spec_vla_ros/benchmarks/decode.py: prefill, verifier passes, one step of a
Mamba and a Llama draft head at the verifier's width; median of --repeats calls, logits read).
Reported per architecture: prefill ms, pass-of-1-token ms, the split prefill : pass : Mamba step
: Llama step, and AR ms per action computed as prefill + 6 passes of 1 token.

    nice -n 10 .venv/bin/python scripts/miniature_depths.py --out docs/miniature_depths

writes miniature_depths.json and miniature_depths.md under --out (one torch thread). Times are the
thread's CPU time (time.thread_time, in place of the benchmark's wall clock), so that other
processes on a shared machine do not count; they still depend on the CPU: the output says where
it ran.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import statistics

import torch

from spec_vla_ros.benchmarks import decode as decode_benchmark
from spec_vla_ros.benchmarks.decode import build_random_architecture, time_architecture
from spec_vla_ros.vla.miniature import MINIATURE_TEXT_CONFIG, MINIATURE_VISION_OVERRIDES, miniature_config
from spec_vla_ros.vla.model import VLAConfig

ACTION_PASSES_AFTER_PREFILL = 6
LLAMA_MLP_RATIO = 11008 / 4096
SIGLIP_MLP_RATIO = 3.7362
HEAD_DIM_LM, HEAD_DIM_VIT = 32, 16            # narrow widths keep heads of these sizes (at least one head)


def deep_config(lm_width: int, dino_width: int, siglip_width: int) -> VLAConfig:
    """OpenVLA-7B's depths and MLP ratios at the given widths; the rest as the miniature."""
    lm_heads = max(1, lm_width // HEAD_DIM_LM)
    text = {**MINIATURE_TEXT_CONFIG, "hidden_size": lm_width, "num_hidden_layers": 32,
            "intermediate_size": round(lm_width * LLAMA_MLP_RATIO), "num_attention_heads": lm_heads,
            "num_key_value_heads": lm_heads}
    dino, siglip = (dict(override) for override in MINIATURE_VISION_OVERRIDES)
    dino.update(embed_dim=dino_width, depth=24, num_heads=max(1, dino_width // HEAD_DIM_VIT), mlp_ratio=4.0)
    siglip.update(embed_dim=siglip_width, depth=27, num_heads=max(1, siglip_width // HEAD_DIM_VIT),
                  mlp_ratio=SIGLIP_MLP_RATIO)
    return VLAConfig(text_config=text, vision_overrides=(dino, siglip))


ARCHITECTURES = {
    "today's default (4 layers x 256, ViTs 4 x 96 / 4 x 112)": miniature_config,
    "32 x 128, ViTs 24 x 64 / 27 x 72 (1/16 of the ViT widths)": lambda: deep_config(128, 64, 72),
    "32 x 64, ViTs 24 x 16 / 27 x 18 (1/64 of every width)": lambda: deep_config(64, 16, 18),
    "32 x 32, ViTs 24 x 16 / 27 x 18": lambda: deep_config(32, 16, 18),
}


def cpu_timed_ms(function, device: str, repeats: int) -> float:
    """decode.timed_ms in the thread's CPU time: median over `repeats` calls after one untimed call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        function()
        times.append((time.thread_time() - started) * 1e3)
    return statistics.median(times)


def measure(repeats: int, prompt_tokens: int) -> dict:
    torch.set_num_threads(1)
    decode_benchmark.timed_ms = cpu_timed_ms          # what time_architecture times with
    rows = {}
    for name, make in ARCHITECTURES.items():
        torch.manual_seed(0)
        model = build_random_architecture(make(), "cpu", torch.float32)
        timing = time_architecture(model, "cpu", repeats, prompt_tokens)
        pass_ms = timing["pass_ms"][1]
        rows[name] = {"prefill_ms": timing["prefill_ms"], "pass_1_ms": pass_ms,
                      "mamba_step_ms": timing["draft"]["mamba"]["step_ms"],
                      "llama_step_ms": timing["draft"]["llama"]["step_ms"],
                      "split": [timing["prefill_ms"] / pass_ms, 1.0, timing["draft"]["mamba"]["step_ms"] / pass_ms,
                                timing["draft"]["llama"]["step_ms"] / pass_ms],
                      "ar_ms_per_action": timing["prefill_ms"] + ACTION_PASSES_AFTER_PREFILL * pass_ms,
                      "parameters": sum(p.numel() for p in model.parameters())}
        del model
    return rows


def markdown(result: dict) -> str:
    lines = [f"{result['script']}: random fp32 weights, CPU ({result['cpu']}, {result['cores']} cores), "
             f"{result['torch_threads']} torch thread, torch {result['torch']}, CPU ms (time.thread_time), median of "
             f"{result['repeats']} calls, "
             f"prompt of {result['prompt_tokens']} tokens, load average {result['load_average']} at the start; "
             f"{result['seconds']} s.", "",
             "| LM layers x width, ViT blocks x widths | prefill ms | pass ms | split prefill : pass : Mamba step : "
             "Llama step | AR ms / action (prefill + 6 passes) |", "|---|---|---|---|---|"]
    for name, row in result["architectures"].items():
        split = " : ".join(f"{value:.3g}" for value in row["split"])
        lines.append(f"| {name} | {row['prefill_ms']:.1f} | {row['pass_1_ms']:.2f} | {split} | "
                     f"{row['ar_ms_per_action']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="calls per timing (median)")
    parser.add_argument("--prompt-tokens", type=int, default=24, help="prompt length of the timed prefill")
    parser.add_argument("--out", type=Path, help="directory for miniature_depths.json and .md")
    args = parser.parse_args()
    started = time.monotonic()
    load = round(os.getloadavg()[0], 1)
    architectures = measure(args.repeats, args.prompt_tokens)
    result = {"script": "scripts/miniature_depths.py", "repeats": args.repeats, "prompt_tokens": args.prompt_tokens,
              "torch_threads": 1, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "load_average": load, "seconds": round(time.monotonic() - started, 1),
              "architectures": architectures}
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "miniature_depths.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "miniature_depths.md").write_text(text)


if __name__ == "__main__":
    main()
