"""`spec-vla-bench gpu`: one prepared run for a machine with one GPU and no network.

Builds OpenVLA-7B with random bf16 weights directly on the device (never a 7B copy on the host),
then measures, in this order, and writes every figure into one JSON (`--out`):

  device      name, torch / CUDA versions, whether mamba_ssm's kernels are usable
  build       seconds to build the model on the device, parameters, bytes
  bandwidth   device copy bandwidth (a large tensor copied; read + write bytes / time), the
              achieved matmul FLOP/s and the time of one tiny kernel (eager launch overhead)
  passes      prefill ms, and ms of a verifier pass over n = 1..8 new tokens after the prompt,
              with the weight bandwidth each pass achieves (LM weights + KV cache read / time)
              against the copy bandwidth; and of a tree pass (the pending token and a random
              tree of TREE_PASS_NODES proposals under a tree mask, issue #24) beside pass 1;
              with transformers' DynamicCache (the default)
  passes_static  the same with the static KV cache (vla/session.py: preallocated once, rollback
              by length), and each figure's ratio to the dynamic one
  passes_compiled  the same with compiled passes (vla/compiled_passes.py: torch.compile per length
              bucket, CUDA graphs on CUDA; on the CPU traced with the eager backend), the seconds
              its warm-up took to compile every bucket, and each figure's ratio to the dynamic one
  drafts      [optional] a Mamba head (one block) and a Llama head (one decoder layer) at the
              verifier's width with random weights: parameters, begin / step / accept ms; when
              passes_compiled ran, both heads' steps compiled too (the Llama head's over its
              static KV cache; `compiled`: compile seconds, step and proposal ms, their ratio to eager)
  decode      [optional] AR vs strict speculative decoding per action on the same observations
              (history, mamba, llama drafts; num_draft_tokens k): passes per action, acceptance
              length, draft / verify / total ms, speedup; random heads accept little, and that
              is reported, not hidden; AR and history also with the static KV cache, and every
              draft with compiled passes and compiled head steps (CACHE_CONFIGURATIONS), their
              tokens compared with AR's like the others'
  agreement   [optional, from decode] share of actions where strict speculative decoding equals
              AR in bf16, beside AR's own noise floor (decoding/noise_floor.py: AR against AR with
              the prompt verified in a pass one position longer)
  cost_model  decoding/cost_model.py's predictions for this architecture at the measured copy
              bandwidth, matmul rate and launch overhead (and at the named device's datasheet
              peaks when the GPU is an H200 or RTX 4090), beside every measured time

Optional sections run only while `--budget-s` leaves time for them (estimated from the passes
already measured); a skipped or failed section says why in the JSON (`skipped`, `errors`).
The random verifier's lm_head rows outside the 256 action tokens are zeroed, so that it answers
with action tokens as a fine-tuned OpenVLA does (no EOS, always 7 tokens); costs are unchanged.

`--arch tiny --device cpu` runs the same code path on a tiny architecture (test/test_gpu_benchmark.py).
The command line (options and their checks): commands/benchmarks/gpu.py; `args` below is what it
parsed.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..decoding import cost_model
from ..decoding.acceptance import STRICT
from ..decoding.decoder import Decoder
from ..decoding.noise_floor import RESHAPED_AR, reshaped_ar_decoder, same_share
from ..drafts.eagle_head import EagleDraft, EagleHead, default_core_config
from ..drafts.history import HistoryDraft
from ..drafts.kinds import AR
from ..drafts.mamba import kernels_unusable_reason, kernels_usable
from ..drafts.registry import CHECKPOINT_KINDS, DRAFT_KINDS, SPECULATIVE_KINDS
from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, BOS_TOKEN_ID, EMPTY_TOKEN_ID
from ..vla.model import VLAConfig
from ..vla import compiled_passes
from ..vla.session import VerifierSession
from .choices import GPU_ARCHES
from .decode import build_random_architecture, random_tree_parents, timed_ms

# Tree sizes whose verifier pass is timed: Spec-VLA's EAGLE-2 tree is ~50 nodes; the decode
# benchmark's trees (spec-vla-bench decode --trees) have 8 to 50.
TREE_PASS_NODES = (8, 16, 32, 50)

# The tiny architecture: the same code and kinds of module (DINOv2-like ViT with registers and
# LayerScale, SigLIP-like ViT with a MAP head, Llama with the real vocabulary), minimal widths.
TINY_TEXT_CONFIG = {"vocab_size": 32064, "pad_token_id": 32000, "hidden_size": 64, "intermediate_size": 172,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
                    "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}
TINY_VISION_OVERRIDES = (
    {"patch_size": 14, "embed_dim": 32, "depth": 3, "num_heads": 2, "init_values": 0.1, "reg_tokens": 4,
     "no_embed_class": True},
    {"patch_size": 14, "embed_dim": 48, "depth": 3, "num_heads": 2, "mlp_ratio": 3.7362, "class_token": False,
     "global_pool": "map"},
)
OPTIONAL_SECTIONS = ("passes_compiled", "drafts", "decode")
COMPILE_S_PER_BUCKET = {"cuda": 60.0, "cpu": 5.0}     # budget guesses for compiling one pass or prefill bucket
HEAD_CONTEXT = cost_model.DEFAULT_DRAFT_CONTEXT
DTYPE = torch.bfloat16
DECODE_DRAFTS = SPECULATIVE_KINDS           # heads (mamba, llama) with random weights, and history
STATIC, COMPILED = "static", "compiled"     # the static KV cache, and compiled passes over it
# AR and the history draft on the static cache; every draft with compiled passes and (heads) compiled steps
CACHE_CONFIGURATIONS = {f"{kind}/{mode}": (kind, mode) for mode, kinds in ((STATIC, (AR, "history")),
                                                                          (COMPILED, (AR,) + DECODE_DRAFTS))
                        for kind in kinds}


def architecture(name: str) -> VLAConfig:
    if name == "openvla-7b":
        return VLAConfig()
    if name == "tiny":
        return VLAConfig(text_config=dict(TINY_TEXT_CONFIG), vision_overrides=TINY_VISION_OVERRIDES)
    raise ValueError(f"architecture '{name}' is unknown; expected one of {GPU_ARCHES}")


class Budget:
    """Wall-clock budget from construction; `allows(estimate)` says whether a section fits."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, estimate_s: float) -> bool:
        return estimate_s <= self.left()


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# aten ops that only make views or read metadata: no kernel launch on a GPU
VIEW_OPS = frozenset(f"aten::{name}" for name in (
    "slice", "select", "view", "reshape", "_unsafe_view", "transpose", "t", "permute", "unsqueeze", "squeeze",
    "expand", "as_strided", "chunk", "split", "split_with_sizes", "unbind", "alias", "detach", "detach_",
    "lift_fresh", "flatten", "unflatten", "empty", "empty_like", "resolve_conj", "resolve_neg", "result_type",
    "item", "_local_scalar_dense", "is_nonzero"))


def count_dispatched_ops(function) -> int:
    """Top-level non-view aten ops one call of `function` dispatches (torch.profiler, host side):
    in eager PyTorch each launches about one GPU kernel, and each costs the launch overhead."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        function()
    return sum(1 for event in profiler.events()
               if event.name.startswith("aten::") and event.name not in VIEW_OPS
               and (event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::")))


# --- sections ------------------------------------------------------------------------------------

def device_section(device: str) -> dict:
    cuda = str(device).startswith("cuda")
    return {"device": str(device),
            "name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "threads": torch.get_num_threads(), "mamba_ssm_kernels": kernels_usable(torch.device(device)),
            "mamba_ssm_kernels_not_used_because": kernels_unusable_reason(torch.device(device)),
            "memory_gib": torch.cuda.get_device_properties(device).total_memory / 2 ** 30 if cuda else None}


def build_section(config: VLAConfig, device: str):
    start = time.perf_counter()
    model = build_random_architecture(config, device, DTYPE)
    answer_with_action_tokens(model)
    synchronize(device)
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    return model, {"seconds": seconds, "parameters": parameters,
                   "gbytes": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
                   "dtype": str(DTYPE).replace("torch.", ""),
                   "peak_device_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30
                   if str(device).startswith("cuda") else None}


@torch.no_grad()
def answer_with_action_tokens(model) -> None:
    """Zero the lm_head rows outside the action tokens (see the module doc)."""
    weight = model.language_model.lm_head.weight
    weight[:ACTION_TOKEN_MIN] = 0
    weight[ACTION_TOKEN_MAX + 1:] = 0


def bandwidth_section(device: str, copy_mib: int, repeats: int) -> dict:
    """Copy bandwidth (bytes read + written per second), matmul FLOP/s and one tiny kernel's time."""
    mib = copy_mib or (2048 if str(device).startswith("cuda") else 64)
    source = torch.empty(mib * 2 ** 20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    copy_ms = timed_ms(lambda: target.copy_(source), device, repeats)
    del source, target
    size = 8192 if str(device).startswith("cuda") else 512
    a = torch.randn(size, size, device=device, dtype=DTYPE)
    b = torch.randn(size, size, device=device, dtype=DTYPE)
    matmul_ms = timed_ms(lambda: a @ b, device, repeats)
    tiny = torch.zeros(16, device=device)
    launches = 200
    launch_ms = timed_ms(lambda: [tiny.add_(1) for _ in range(launches)], device, 3) / launches
    return {"copy_mib": mib, "copy_ms": copy_ms, "copy_gbs": 2 * mib * 2 ** 20 / (copy_ms * 1e-3) / 1e9,
            "matmul_size": size, "matmul_ms": matmul_ms, "matmul_tflops": 2 * size ** 3 / (matmul_ms * 1e-3) / 1e12,
            "tiny_kernel_us": launch_ms * 1e3}


def random_prompt(generator: torch.Generator, prompt_tokens: int) -> list[int]:
    """BOS, random ordinary tokens, then 29871 as OpenVLA's prompt ends: `prompt_tokens` ids."""
    middle = torch.randint(3, 29000, (max(prompt_tokens - 2, 0),), generator=generator).tolist()
    return [BOS_TOKEN_ID] + middle + [EMPTY_TOKEN_ID]


def random_pixels(generator: torch.Generator, image_size: int) -> torch.Tensor:
    return torch.randn(6, image_size, image_size, generator=generator)


def language_model_weight_bytes(model) -> int:
    """Bytes of the weights a verifier pass reads: every layer, the final norm and the lm_head."""
    language_model = model.language_model
    modules = [language_model.model.layers, language_model.model.norm, language_model.lm_head]
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


def kv_cache_bytes(session: VerifierSession) -> int:
    return sum(t.numel() * t.element_size() for layer in session.cache.layers for t in (layer.keys, layer.values))


def passes_section(model, device: str, repeats: int, prompt_tokens: int, copy_gbs: float, seed: int,
                   kv_cache: str = "dynamic"):
    """Prefill ms and ms per pass of n = 1..8 tokens; returns the section and the prefill's step.
    `kv_cache`: "dynamic", "static" or COMPILED (static, passes compiled: warmed up first, timed)."""
    generator = torch.Generator().manual_seed(seed)
    pixels, prompt = random_pixels(generator, model.config.image_size), random_prompt(generator, prompt_tokens)
    compiled = kv_cache == COMPILED
    session = VerifierSession(model, STATIC if compiled else kv_cache, compiled=compiled)
    warm_up_s = compiled_passes.warm_up(session, pixels, prompt, max(TREE_PASS_NODES) + 1) if compiled else 0.0
    prefill = session.prefill(pixels, prompt)
    prefill_ms = timed_ms(lambda: session.prefill(pixels, prompt).greedy(), device, repeats)  # logits read, as a decoder does
    length = session.length
    weight_bytes, kv_bytes = language_model_weight_bytes(model), kv_cache_bytes(session)
    tokens = [ACTION_TOKEN_MIN + 8 * i for i in range(cost_model.MAX_PASS_TOKENS)]

    def one_pass(count):
        session.extend(tokens[:count]).greedy()
        session.truncate(length)

    passes = {}
    for count in range(1, cost_model.MAX_PASS_TOKENS + 1):
        pass_ms = timed_ms(lambda: one_pass(count), device, repeats)
        achieved = (weight_bytes + kv_bytes) / (pass_ms * 1e-3) / 1e9
        passes[str(count)] = {"ms": pass_ms, "achieved_gbs": achieved, "of_copy_bandwidth": achieved / copy_gbs}

    def tree_pass(parents):
        session.verify_tree(tokens[:1] * len(parents), parents).greedy()
        session.keep_path([])

    trees = {}
    for nodes in TREE_PASS_NODES:
        parents = random_tree_parents(nodes, generator)
        tree_ms = timed_ms(lambda: tree_pass(parents), device, repeats)
        trees[str(nodes)] = {"ms": tree_ms, "of_pass_1": tree_ms / passes["1"]["ms"]}
    section = {"kv_cache": kv_cache, "warm_up_s": warm_up_s, "prompt_tokens": prompt_tokens, "positions": length, "prefill_ms": prefill_ms,
               "weight_bytes_per_pass": weight_bytes, "kv_cache_bytes": kv_bytes, "pass": passes, "tree_pass": trees,
               "prefill_in_passes": prefill_ms / passes["1"]["ms"],
               "dispatched_ops": {"prefill": count_dispatched_ops(lambda: session.prefill(pixels, prompt)),
                                  "pass_1": count_dispatched_ops(lambda: one_pass(1))}}
    return section, prefill


def static_over_dynamic(static: dict, dynamic: dict) -> dict:
    """Each time of the static section divided by the dynamic one's (below 1: the static cache is faster)."""
    return {"prefill": static["prefill_ms"] / dynamic["prefill_ms"],
            **{f"pass_{n}": entry["ms"] / dynamic["pass"][n]["ms"] for n, entry in static["pass"].items()},
            **{f"tree_pass_{n}": entry["ms"] / dynamic["tree_pass"][n]["ms"] for n, entry in static["tree_pass"].items()}}


def random_head(kind: str, model, device: str, seed: int) -> EagleHead:
    torch.manual_seed(seed)
    with torch.device(device):
        head = EagleHead(kind, default_core_config(kind, model), context=HEAD_CONTEXT)
    return head.to_runtime(device, DTYPE)


def drafts_section(model, device: str, repeats: int, prefill, num_draft_tokens: int, seed: int,
                   compiled: bool = False) -> dict:
    """Per kind: parameters, begin ms, one proposal step ms, k proposals ms, accept of one token ms;
    with `compiled`: the same proposals compiled (EagleDraft.configure; a Llama head's over its
    static KV cache), the compile's seconds, and each figure's ratio to the eager one."""
    hidden, embeds = prefill.hidden, prefill.input_embeds
    token = ACTION_TOKEN_MIN + 100
    section = {}
    for kind in CHECKPOINT_KINDS:
        head = random_head(kind, model, device, seed)
        draft = EagleDraft(head, model)
        begin_ms = timed_ms(lambda: draft.begin(hidden, embeds), device, repeats)
        step_ms = timed_ms(lambda: draft.propose(token, 1), device, repeats)
        propose_ms = timed_ms(lambda: draft.propose(token, num_draft_tokens), device, repeats)

        def propose_and_accept():
            draft.propose(token, 1)
            draft.accept([token], hidden[-1:])
            draft.action_tokens_read = 0          # keep the head reading (it stops after 6 tokens)

        accept_ms = timed_ms(propose_and_accept, device, repeats) - step_ms
        section[kind] = {"parameters": sum(p.numel() for p in head.parameters()), "begin_ms": begin_ms,
                         "step_ms": step_ms, f"propose_{num_draft_tokens}_ms": propose_ms,
                         "accept_ms": max(accept_ms, 0.0),
                         "dispatched_ops_per_step": count_dispatched_ops(lambda: draft.propose(token, 1))}
        if compiled and draft.configure(compiled=True):
            started = time.perf_counter()
            draft.begin(hidden, embeds)                              # a Llama head: onto its static cache
            draft.propose(token, 1)                                  # compiles the step's one graph
            compiled_step_ms = timed_ms(lambda: draft.propose(token, 1), device, repeats)
            compiled_propose_ms = timed_ms(lambda: draft.propose(token, num_draft_tokens), device, repeats)
            section[kind]["compiled"] = {"compile_s": time.perf_counter() - started, "step_ms": compiled_step_ms,
                                         f"propose_{num_draft_tokens}_ms": compiled_propose_ms,
                                         "step_of_eager": compiled_step_ms / step_ms,
                                         "propose_of_eager": compiled_propose_ms / propose_ms}
        del draft, head
    return section


def observations(model, episodes: int, steps: int, prompt_tokens: int, seed: int) -> list:
    """[(episode, pixels, prompt)]: per episode one random scene and prompt; consecutive
    observations differ by small noise (a robot's camera between control steps)."""
    generator = torch.Generator().manual_seed(seed + 1)
    made = []
    for episode in range(episodes):
        scene, prompt = random_pixels(generator, model.config.image_size), random_prompt(generator, prompt_tokens)
        for _ in range(steps):
            made.append((episode, scene + 0.05 * torch.randn(scene.shape, generator=generator), prompt))
    return made


def decoders(model, device: str, num_draft_tokens: int, seed: int, compiled: bool = True) -> dict:
    """AR, its noise floor, the drafts, and CACHE_CONFIGURATIONS (the compiled ones if `compiled`)."""
    made = {AR: Decoder(model), RESHAPED_AR: reshaped_ar_decoder(model)}
    for name in DECODE_DRAFTS:
        needs_head = DRAFT_KINDS[name].needs_checkpoint
        draft = EagleDraft(random_head(name, model, device, seed), model) if needs_head else HistoryDraft()
        made[name] = Decoder(model, draft, num_draft_tokens, STRICT)
    for name, (kind, mode) in CACHE_CONFIGURATIONS.items():
        if mode == COMPILED and not compiled:
            continue
        draft = None if kind == AR else HistoryDraft() if not DRAFT_KINDS[kind].needs_checkpoint else \
            EagleDraft(random_head(kind, model, device, seed), model)           # the eager heads' weights
        made[name] = Decoder(model, draft, num_draft_tokens, STRICT, kv_cache=STATIC, compiled=mode == COMPILED)
    return made


def decode_section(model, device: str, observed: list, num_draft_tokens: int, seed: int,
                   compiled: bool = True) -> tuple[dict, dict]:
    """AR vs strict speculative per action, interleaved observation by observation; and agreement.
    `compiled`: with the compiled configurations (their passes compiled by the section before)."""
    configs = decoders(model, device, num_draft_tokens, seed, compiled)
    for decoder in configs.values():                        # warm-up, untimed (compiled: every pass length)
        decoder.warm_up(observed[0][1], observed[0][2])
        decoder.decode(observed[0][1], observed[0][2])
        decoder.reset_episode()
    records = {name: [] for name in configs}
    previous = None
    for episode, pixels, prompt in observed:
        for name, decoder in configs.items():
            if episode != previous:
                decoder.reset_episode()
            records[name].append(decoder.decode(pixels, prompt)[1])
        previous = episode
    ar_tokens = [stats.tokens for stats in records[AR]]
    ar_median = float(np.median([stats.total_ms for stats in records[AR]]))
    section = {"num_draft_tokens": num_draft_tokens, "actions": len(observed), "acceptance": STRICT.name,
               "configurations": {}}
    for name, stats_list in records.items():
        passes = np.array([s.verifier_passes for s in stats_list], dtype=float)
        produced = sum(len(s.generated) for s in stats_list)
        median = float(np.median([s.total_ms for s in stats_list]))
        section["configurations"][name] = {
            "passes_per_action": float(passes.mean()), "acceptance_length": produced / float(passes.sum()),
            "ms_median": median, "ms_p90": float(np.percentile([s.total_ms for s in stats_list], 90)),
            "draft_ms_mean": float(np.mean([s.draft_ms for s in stats_list])),
            "verify_ms_mean": float(np.mean([s.verify_ms for s in stats_list])),
            "speedup": ar_median / median,
            "draft_calls_per_action": float(np.mean([sum(s.proposed_per_pass[1:]) + len(s.proposed_per_pass) - 1
                                                     for s in stats_list])),
            "same_as_ar": same_share([s.tokens for s in stats_list], ar_tokens)}
    agreement = {"noise_floor_same_as_ar": section["configurations"][RESHAPED_AR]["same_as_ar"],
                 "strict_same_as_ar": {name: section["configurations"][name]["same_as_ar"]
                                       for name in DECODE_DRAFTS + tuple(CACHE_CONFIGURATIONS) if name in records},
                 "token_agreement": {name: token_agreement(records[name], ar_tokens)
                                     for name in (RESHAPED_AR,) + DECODE_DRAFTS + tuple(CACHE_CONFIGURATIONS)
                                     if name in records},
                 "dtype": str(DTYPE).replace("torch.", "")}
    return section, agreement


def token_agreement(stats_list: list, reference: list) -> float:
    pairs = [(a, b) for stats, ref in zip(stats_list, reference) for a, b in zip(stats.tokens, ref)]
    return sum(a == b for a, b in pairs) / len(pairs)


def measured_device(out: dict) -> cost_model.DeviceSpec:
    bandwidth = out["bandwidth"]
    return cost_model.DeviceSpec(f"measured: {out['device']['name']}", bandwidth["matmul_tflops"],
                                 bandwidth["copy_gbs"] / 1e3, "measured in this run: matmul rate, copy bandwidth, "
                                 "one tiny kernel's time", launch_us=bandwidth["tiny_kernel_us"])


def named_device(name: str):
    lowered = name.lower()
    return cost_model.H200 if "h200" in lowered else cost_model.RTX_4090 if "4090" in lowered else None


def cost_model_section(config: VLAConfig, out: dict) -> dict:
    """Predicted ms (roofline and eager) beside every measured time, for this architecture."""
    shape = cost_model.shape_from_config(config)
    costs = cost_model.action_costs(shape, out["passes"]["prompt_tokens"])
    devices = [measured_device(out)] + [d for d in [named_device(out["device"]["name"])] if d]
    measured = {"prefill": out["passes"]["prefill_ms"],
                **{f"pass_{n}": entry["ms"] for n, entry in out["passes"]["pass"].items()},
                **{f"tree_pass_{n}": entry["ms"] for n, entry in out["passes"]["tree_pass"].items()}}
    predicted = {"prefill": costs.prefill, **{f"pass_{n}": cost for n, cost in costs.passes.items()},
                 **{f"tree_pass_{n}": costs.tree_pass(int(n)) for n in out["passes"]["tree_pass"]}}
    if "drafts" in out:
        for kind, entry in out["drafts"].items():
            measured[f"{kind}_step"] = entry["step_ms"]
            measured[f"{kind}_begin"] = entry["begin_ms"]
            predicted[f"{kind}_step"], predicted[f"{kind}_begin"] = costs.draft_steps[kind], costs.draft_begins[kind]
    ops = {**out["passes"]["dispatched_ops"],
           **{f"{kind}_step": entry["dispatched_ops_per_step"] for kind, entry in out.get("drafts", {}).items()}}
    section = {"parameters": shape.parameter_counts(), "devices": {},
               "kernels": {name: {"dispatched_ops": count, "model": predicted[name].kernels}
                           for name, count in ops.items()}}
    for device in devices:
        rows = {name: {"measured_ms": measured[name], "roofline_ms": cost.roofline_ms(device),
                       "eager_ms": cost.eager_ms(device)} for name, cost in predicted.items()}
        if "decode" in out:
            k = out["decode"]["num_draft_tokens"]
            for name, entry in out["decode"]["configurations"].items():
                if name == AR:
                    rows["action_ar"] = {"measured_ms": entry["ms_median"], "roofline_ms":
                                         cost_model.ar_ms(costs, device, "roofline"),
                                         "eager_ms": cost_model.ar_ms(costs, device, "eager")}
                elif name in DECODE_DRAFTS:
                    rows[f"action_{name}"] = {
                        "measured_ms": entry["ms_median"], **{f"{mode}_ms": cost_model.speculative_ms(
                            costs, device, mode, name, entry["passes_per_action"], k) for mode in ("roofline", "eager")}}
        section["devices"][device.name] = {"spec": {"peak_tflops": device.peak_tflops,
                                                    "bandwidth_tbs": device.bandwidth_tbs,
                                                    "launch_us": device.launch_us, "source": device.source},
                                           "rows": rows}
    return section


# --- the run -------------------------------------------------------------------------------------

def estimate_s(section: str, out: dict, args) -> float:
    """Seconds a section is expected to take, from the passes measured so far (generous)."""
    pass_s = out["passes"]["pass"]["1"]["ms"] / 1e3
    action_s = out["passes"]["prefill_ms"] / 1e3 + (ACTION_DIM - 1) * pass_s
    if section == "passes_compiled":
        buckets = len(compiled_passes.PASS_BUCKETS) + 1 + len(compiled_passes.warm_up_prefill_buckets(
            0, args.prompt_tokens, max(TREE_PASS_NODES) + 1))       # + 1: where the image's length falls
        return buckets * COMPILE_S_PER_BUCKET[torch.device(args.device).type] + 3 * (args.repeats + 1) * (
            8 + len(TREE_PASS_NODES)) * pass_s + 5.0
    # with compiled passes, each draft head's step compiles too: in the drafts section and again in decode's
    step_compile_s = len(CHECKPOINT_KINDS) * COMPILE_S_PER_BUCKET[torch.device(args.device).type] \
        if "passes_compiled" in out else 0.0
    if section == "drafts":
        return len(CHECKPOINT_KINDS) * (4 * (args.repeats + 1) * pass_s + 5.0) + step_compile_s
    if section == "decode":
        actions = args.episodes * args.steps_per_episode + 1
        return (2 + len(DECODE_DRAFTS) + len(CACHE_CONFIGURATIONS)) * actions * action_s * 2.0 + 5.0 + step_compile_s
    raise ValueError(section)


def write(out: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")


def benchmark(args) -> dict:
    """The run, sections in order, the JSON rewritten after each; prints the summary. SystemExit
    for a CUDA device this machine lacks."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here (use --arch tiny --device cpu to try "
                         "the code path on the CPU)")
    budget = Budget(args.budget_s)
    config = architecture(args.arch)
    out = {"benchmark": "spec-vla-bench gpu", "arch": args.arch, "budget_s": args.budget_s,
           "device": device_section(args.device), "skipped": {}, "errors": {}}
    model, out["build"] = build_section(config, args.device)
    out["bandwidth"] = bandwidth_section(args.device, args.copy_mib, args.repeats)
    out["passes"], prefill = passes_section(model, args.device, args.repeats, args.prompt_tokens,
                                            out["bandwidth"]["copy_gbs"], args.seed)
    out["passes_static"], _ = passes_section(model, args.device, args.repeats, args.prompt_tokens,
                                             out["bandwidth"]["copy_gbs"], args.seed, kv_cache=STATIC)
    out["passes_static"]["of_dynamic"] = static_over_dynamic(out["passes_static"], out["passes"])
    write(out, args.out)
    for section in OPTIONAL_SECTIONS:
        needed = estimate_s(section, out, args)
        if not budget.allows(needed):
            out["skipped"][section] = (f"budget: {budget.left():.1f} s of {args.budget_s:g} s left, "
                                       f"section estimated at {needed:.1f} s")
            continue
        try:
            if section == "passes_compiled":
                out[section], _ = passes_section(model, args.device, args.repeats, args.prompt_tokens,
                                                 out["bandwidth"]["copy_gbs"], args.seed, kv_cache=COMPILED)
                out[section]["of_dynamic"] = static_over_dynamic(out[section], out["passes"])
            elif section == "drafts":
                out["drafts"] = drafts_section(model, args.device, args.repeats, prefill, args.num_draft_tokens,
                                               args.seed, compiled="passes_compiled" in out)
            else:
                observed = observations(model, args.episodes, args.steps_per_episode, args.prompt_tokens, args.seed)
                out["decode"], out["agreement"] = decode_section(model, args.device, observed, args.num_draft_tokens,
                                                                 args.seed, compiled="passes_compiled" in out)
        except Exception as error:        # a prepared run on a borrowed GPU keeps what it measured
            out["errors"][section] = f"{type(error).__name__}: {error}"
        write(out, args.out)
    if "decode" not in out:
        out["skipped"].setdefault("agreement", "needs the decode section")
    out["cost_model"] = cost_model_section(config, out)
    if str(args.device).startswith("cuda"):
        out["device"]["peak_allocated_gib"] = torch.cuda.max_memory_allocated(args.device) / 2 ** 30
    out["seconds"] = budget.elapsed()
    write(out, args.out)
    print(summary(out))
    print(f"wrote {args.out}")
    return out


def summary(out: dict) -> str:
    passes = out["passes"]
    lines = [f"{out['arch']} on {out['device']['name']} (torch {out['device']['torch']}, bf16, random weights): "
             f"built in {out['build']['seconds']:.1f} s; copy {out['bandwidth']['copy_gbs']:.0f} GB/s, matmul "
             f"{out['bandwidth']['matmul_tflops']:.3g} TFLOP/s, one tiny kernel {out['bandwidth']['tiny_kernel_us']:.1f} us",
             f"prefill {passes['prefill_ms']:.2f} ms ({passes['prefill_in_passes']:.2f} passes); pass ms by new tokens: "
             + " ".join(f"{n}:{entry['ms']:.2f}" for n, entry in passes["pass"].items())
             + f"; pass of 1 reads at {passes['pass']['1']['achieved_gbs']:.0f} GB/s "
               f"({passes['pass']['1']['of_copy_bandwidth']:.0%} of copy); tree pass ms by proposals: "
             + " ".join(f"{n}:{entry['ms']:.2f} ({entry['of_pass_1']:.2f}x pass 1)"
                        for n, entry in passes["tree_pass"].items())]
    for section, label in (("passes_static", "static KV cache"), ("passes_compiled", "compiled passes")):
        if section in out:
            ratios = out[section]["of_dynamic"]
            warm_up = f" (warm-up {out[section]['warm_up_s']:.1f} s)" if out[section]["warm_up_s"] else ""
            lines.append(f"{label}{warm_up}, ms and x of dynamic: prefill {out[section]['prefill_ms']:.2f} "
                         f"({ratios['prefill']:.2f}x); pass "
                         + " ".join(f"{n}:{entry['ms']:.2f} ({ratios[f'pass_{n}']:.2f}x)"
                                    for n, entry in out[section]["pass"].items()))
    if "drafts" in out:
        why_not = out["device"].get("mamba_ssm_kernels_not_used_because")
        lines.append("mamba_ssm kernels: " + ("used by the Mamba head" if out["device"]["mamba_ssm_kernels"]
                                              else f"not used: {why_not}"))
        lines.append("draft heads begin/step ms: " + ", ".join(
            f"{kind} {entry['begin_ms']:.2f}/{entry['step_ms']:.3f}"
            + (f" (compiled step {entry['compiled']['step_ms']:.3f})" if "compiled" in entry else "")
            for kind, entry in out["drafts"].items()))
    if "decode" in out:
        lines.append("| configuration | passes/action | accept len | draft ms | verify ms | ms/action | speedup | "
                     "same as AR |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, entry in out["decode"]["configurations"].items():
            lines.append(f"| {name} | {entry['passes_per_action']:.2f} | {entry['acceptance_length']:.2f} | "
                         f"{entry['draft_ms_mean']:.2f} | {entry['verify_ms_mean']:.2f} | {entry['ms_median']:.2f} | "
                         f"{entry['speedup']:.2f}x | {entry['same_as_ar']:.0%} |")
    for section, reason in {**out["skipped"], **out["errors"]}.items():
        lines.append(f"{section}: not measured ({reason})")
    return "\n".join(lines)
