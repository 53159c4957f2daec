"""`spec-vla-bench cost`: OpenVLA-7B's cost model (decoding/cost_model.py) printed for named
GPUs: FLOPs, bytes and kernels per part, milliseconds (roofline and eager), the split prefill :
pass : draft step, and ms per action for AR and for speculative decoding at given verifier passes
per action. Computed, never measured. The command line: commands/benchmarks/cost.py."""
from __future__ import annotations

from dataclasses import replace

from ..decoding.cost_model import DEVICES, OPENVLA_7B, action_costs, report


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


def cost_report(device_names: list[str], prompt_tokens: int, passes: list[float], num_draft_tokens: int,
                mamba_layers: int = 1, launch_us: float | None = None) -> dict:
    """The cost model's numbers for OpenVLA-7B on each named device (keys of DEVICES), at
    `passes` verifier passes per action and `num_draft_tokens`; `launch_us` replaces the
    devices' eager launch overhead per kernel."""
    devices = [DEVICES[name] for name in device_names]
    if launch_us is not None:
        devices = [replace(device, launch_us=launch_us) for device in devices]
    costs = action_costs(OPENVLA_7B, prompt_tokens, mamba_layers)
    return report(costs, devices, passes, num_draft_tokens)
