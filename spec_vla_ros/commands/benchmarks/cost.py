"""`spec-vla-bench cost`: OpenVLA-7B's cost model printed for named GPUs (benchmarks/cost.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...decoding.cost_model import DEFAULT_PROMPT_TOKENS, DEVICES, MAX_PASS_TOKENS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", nargs="+", default=list(DEVICES), choices=list(DEVICES))
    parser.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS,
                        help="prompt length in Llama-2 tokens, BOS included (prefill = these + 256 patches)")
    parser.add_argument("--passes", type=float, nargs="+", default=[7.0, 5.0, 3.43, 2.38, 1.0],
                        help="verifier passes per action to predict speculative decoding at (Spec-VLA: 7/2.04 "
                             "strict, 7/2.94 relaxed)")
    parser.add_argument("--num-draft-tokens", type=int, default=4)
    parser.add_argument("--mamba-layers", type=int, default=1)
    parser.add_argument("--launch-us", type=float, default=None, help="eager launch overhead per kernel (default 10)")
    parser.add_argument("--json", type=Path, help="write the numbers here")


def run(args) -> dict:
    if not 1 <= args.num_draft_tokens < MAX_PASS_TOKENS:
        raise SystemExit(f"--num-draft-tokens must be 1..{MAX_PASS_TOKENS - 1}, got {args.num_draft_tokens}")
    if any(p < 1 for p in args.passes):
        raise SystemExit(f"--passes must each be >= 1 (the prefill is a pass), got {args.passes}")
    from ...benchmarks.cost import cost_report, format_report

    result = cost_report(args.devices, args.prompt_tokens, args.passes, args.num_draft_tokens, args.mamba_layers,
                         args.launch_us)
    print(format_report(result, args.passes, args.num_draft_tokens))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result
