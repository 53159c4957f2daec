"""`spec-vla-bench cost`: OpenVLA-7B's cost model (decoding/cost_model.py) printed for named
GPUs: FLOPs, bytes and kernels per part, milliseconds (roofline and eager), the split prefill :
pass : draft step, and ms per action for AR and for speculative decoding at given verifier passes
per action. Computed, never measured; `--json` writes the numbers."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..decoding.cost_model import DEFAULT_PROMPT_TOKENS, DEVICES, MAX_PASS_TOKENS, OPENVLA_7B, action_costs, report


def format_report(result: dict, passes_list: list[float], num_draft_tokens: int) -> str:
    lines = [f"OpenVLA-7B cost model (computed, not measured): prefill over {result['positions']} positions, "
             "bf16 weights", "",
             "| part | GFLOP | GB read | eager kernels |", "|---|---|---|---|"]
    lines += [f"| {name} | {p['gflop']:.2f} | {p['gbytes']:.3f} | {p['kernels']} |"
              for name, p in result["parts"].items()]
    for name, entry in result["devices"].items():
        spec = entry["spec"]
        lines += ["", f"{name}: {spec['peak_tflops']} TFLOP/s, {spec['bandwidth_tbs']} TB/s, "
                      f"{spec['launch_us']} us per eager kernel ({spec['source']})"]
        for mode in ("roofline", "eager"):
            e, s = entry[mode], entry[mode]["split"]
            lines.append(f"  {mode:8s} prefill : pass(1 token) : mamba step : llama step : history = "
                         f"{s['prefill']:.2f} : 1 : {s['mamba_step']:.3f} : {s['llama_step']:.3f} : 0   "
                         f"(pass {e['ms']['pass_1']:.2f} ms, pass of 8 {e['ms']['pass_8']:.2f} ms, "
                         f"prefill {e['ms']['prefill']:.2f} ms)")
        lines.append(f"  ms per action, AR (prefill + 6 passes): roofline {entry['roofline']['ar_ms_per_action']:.1f}, "
                     f"eager {entry['eager']['ar_ms_per_action']:.1f}; speculative with k = {num_draft_tokens} "
                     f"(roofline / eager) at passes per action " + ", ".join(f"{p:g}" for p in passes_list) + ":")
        for kind in entry["roofline"]["speculative_ms_per_action"]:
            cells = [f"{entry['roofline']['speculative_ms_per_action'][kind][str(p)]:.1f}/"
                     f"{entry['eager']['speculative_ms_per_action'][kind][str(p)]:.1f}" for p in passes_list]
            lines.append(f"    {kind:8s} " + "  ".join(cells))
    return "\n".join(lines)


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
    devices = [DEVICES[name] for name in args.devices]
    if args.launch_us is not None:
        devices = [replace(device, launch_us=args.launch_us) for device in devices]
    costs = action_costs(OPENVLA_7B, args.prompt_tokens, args.mamba_layers)
    result = report(costs, devices, args.passes, args.num_draft_tokens)
    print(format_report(result, args.passes, args.num_draft_tokens))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result
