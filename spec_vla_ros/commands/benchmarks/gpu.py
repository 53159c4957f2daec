"""`spec-vla-bench gpu`'s command line: options and their checks; the run and its JSON are
benchmarks/gpu.py (imported only to run)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...benchmarks.choices import GPU_ARCHES
from ...decoding.cost_model import DEFAULT_PROMPT_TOKENS
from ...decoding.spec import check_num_draft_tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=GPU_ARCHES, default="openvla-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_benchmark.json"))
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget; optional sections are skipped (and say so) when it runs low")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (median)")
    parser.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS,
                        help="prompt length in Llama-2 tokens, BOS included")
    parser.add_argument("--episodes", type=int, default=3, help="decode: episodes of consecutive observations")
    parser.add_argument("--steps-per-episode", type=int, default=8)
    parser.add_argument("--num-draft-tokens", type=int, default=4)
    parser.add_argument("--copy-mib", type=int, default=0, help="copy size for the bandwidth (0: 2048 on CUDA, 64 else)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def run(args) -> dict:
    if args.repeats < 1 or args.episodes < 1 or args.steps_per_episode < 1 or args.prompt_tokens < 2:
        raise SystemExit("--repeats, --episodes and --steps-per-episode must be >= 1 and --prompt-tokens >= 2")
    try:
        check_num_draft_tokens(args.num_draft_tokens, "--num-draft-tokens")
    except ValueError as error:
        raise SystemExit(str(error)) from None
    from ...benchmarks.gpu import benchmark

    return benchmark(args)
