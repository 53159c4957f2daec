"""`spec-vla-bench decode`'s measurement: autoregressive vs speculative decoding on the same
observations. The command line (options, their checks, which drafts): commands/benchmarks/decode.py;
`args` below is what it parsed.

Every configuration (AR, and each draft x acceptance rule x shape: a chain of each
num_draft_tokens, or a tree of --trees) decodes the same sequence of observations, interleaved
observation by observation so that machine load affects all alike; each has its own draft
instance, reset at episode boundaries. Reported per configuration: verifier passes per action,
acceptance length (tokens per pass), the acceptance rate at each draft position (a tree's
depth) on the kept path, draft and verifier ms per action (means), ms per action (median, p90),
speedup vs AR in this run, the share of actions identical to AR's, the actions the verifier ended
with an EOS, the largest |bin difference| from the AR action per dimension, which source's branch
the passes kept (model / history / retrieval), and OpenVLA-7B's ms per action and speedup on an
H200 computed by the cost model for the same passes (decoding/cost_model.profile_ms, eager: on a
GPU a pass of 50 positions costs about what a pass of 1 does, on this CPU it does not).

AR's noise floor is measured beside them: the row `ar-reshaped` is greedy decoding with every
verifier pass one position longer (decoding/noise_floor.py). Its "same as AR" is the share of
actions greedy decoding reproduces when only the passes' shapes change; strict
speculative decoding, which verifies in passes of other shapes, is expected near it, not at
100 %, where the verifier has near-tied argmaxes (see decoding.acceptance.LOSSLESS_CLAIM).

Drafts: a draft head without a checkpoint serves the miniature with the packaged one; for any
other verifier it is skipped (`resolve_drafts` says which), and `history` (no checkpoint) always
runs.

`--arch openvla-7b` additionally builds the full-size OpenVLA architecture with random weights
directly on the device in bf16 (no download, never 7B fp32 parameters on the CPU), times its
prefill and verifier passes and full-size draft heads, and projects ms per action for each
acceptance profile measured on the miniature. On a CPU-only machine it refuses unless --force.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..decoding import cost_model
from ..decoding.acceptance import STRICT, Acceptance
from ..decoding.decoder import Decoder
from ..decoding.noise_floor import RESHAPED_AR, reshaped_ar_decoder, same_share
from ..decoding.spec import DecoderSpec, parse_tree_shape, shapes_to_compare
from ..drafts.eagle_head import EagleDraft, EagleHead, default_core_config
from ..drafts.kinds import AR
from ..drafts.registry import CHECKPOINT_KINDS, DRAFT_KINDS, ResolvedDraft, load, resolve, verifier_identity
from ..training.arguments import CommandError, apply_runtime_arguments
from ..training.collect import synthetic_episode
from ..vla.action_tokenizer import token_ids_to_bin_indices
from ..vla.checkpoint import resolve_dtype
from ..vla.constants import ACTION_DIM, ACTION_NAMES, BOS_TOKEN_ID, EMPTY_TOKEN_ID
from ..vla.miniature import MINIATURE_NAME
from ..vla.model import OpenVLA, VLAConfig
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.session import VerifierSession
from ..vla.verifiers import load_verifier


def resolve_drafts(verifier: str, names: list[str], checkpoints: dict[str, str]) -> tuple[list[ResolvedDraft],
                                                                                       list[tuple[str, str]]]:
    """Each draft of `names` (once each, in order) resolved against `verifier` (checked without
    loading weights), its checkpoint `checkpoints.get(name, '')`; and the skipped ones as (draft,
    verifier name): a draft head with no checkpoint for a verifier other than the miniature (history
    needs none and always runs). Raises CommandError."""
    try:
        verifier_name = verifier_identity(verifier)[0]
    except (ValueError, TypeError, KeyError) as error:     # config.json that is not an OpenVLA config
        raise CommandError(f"--verifier {verifier}: config.json is not an OpenVLA config ({error})") from None
    miniature = verifier_name == MINIATURE_NAME
    kept, skipped = [], []
    for name in dict.fromkeys(names):
        checkpoint = checkpoints.get(name, "")
        if DRAFT_KINDS[name].needs_checkpoint and not checkpoint and not miniature:
            skipped.append((name, verifier_name))
            continue
        try:
            kept.append(resolve(name, checkpoint, verifier))
        except ValueError as error:
            raise CommandError(str(error)) from None
    return kept, skipped


def observations(episodes: int, steps: int, seed: int):
    """[(episode, instruction, frame)] from seeded synthetic episodes."""
    return [(episode, instruction, frame)
            for episode in range(episodes)
            for instruction, frames in [synthetic_episode(seed + episode, steps)]
            for frame in frames]


def acceptance_rules(thresholds: list[int], rules: list[str]) -> list[Acceptance]:
    """Strict for threshold 0, otherwise one rule per name; each rule once, in the order given."""
    made = [STRICT if threshold == 0 else Acceptance.from_name(rule, threshold)
            for threshold in thresholds for rule in rules]
    return list(dict.fromkeys(made))


@dataclass(frozen=True)
class Contender:
    """One row of the benchmark: `label` is the spec's draft kind, or RESHAPED_AR for AR's
    noise-floor twin (an AR decoder with reshaped passes, not a draft kind)."""
    label: str
    spec: DecoderSpec
    decoder: Decoder


def shapes(args) -> list:
    """(num_draft_tokens, tree or None) of `args.trees` and `args.num_draft_tokens` (spec.shapes_to_compare)."""
    return shapes_to_compare(args.trees, args.num_draft_tokens)


def configurations(args, verifier, drafts: list[ResolvedDraft]) -> list[Contender]:
    """AR first, then AR's noise-floor twin, then each draft x acceptance rule x shape (`shapes`),
    each with its own draft instance. `drafts`: resolved drafts (resolve_drafts)."""
    ar = DecoderSpec(AR)
    contenders = [Contender(AR, ar, Decoder(verifier.model)),
                  Contender(RESHAPED_AR, ar, reshaped_ar_decoder(verifier.model))]
    for draft in drafts:
        for acceptance in acceptance_rules(args.thresholds, args.relaxed_rules):
            for k, tree in shapes(args):
                spec = DecoderSpec(draft.kind, draft.checkpoint, k, acceptance, tree)
                decoder = Decoder(verifier.model, load(draft, verifier), k, acceptance, tree=tree)
                contenders.append(Contender(draft.kind, spec, decoder))
    return contenders


def gpu_estimate_ms(contender: Contender, records: list) -> float:
    """OpenVLA-7B's mean ms per action on an H200 (eager, the cost model) for these actions' passes."""
    spec = contender.spec
    costs = cost_model.action_costs()
    kind = spec.draft if contender.label != RESHAPED_AR else AR
    tree = (spec.tree.depth, spec.tree.top_k) if spec.tree is not None else None
    if kind == AR and contender.label == AR:
        return cost_model.ar_ms(costs, cost_model.H200, "eager")
    return float(np.mean([cost_model.profile_ms(costs, cost_model.H200, "eager", kind, stats.proposed_per_pass, tree)
                          for stats in records]))


def summarize(contender: Contender, records: list, ar_tokens: list, ar_median: float | None,
              ar_gpu_ms: float | None = None) -> dict:
    ms = np.array([stats.total_ms for stats in records])
    passes = np.array([stats.verifier_passes for stats in records])
    judged = {}
    for stats in records:
        for position, accepted in stats.position_outcomes():
            judged.setdefault(position, []).append(accepted)
    deviation = np.abs(token_ids_to_bin_indices([s.tokens for s in records])
                       - token_ids_to_bin_indices(ar_tokens)).max(axis=0)
    median = float(np.median(ms))
    sources: dict = {}
    for stats in records:
        for source, count in stats.source_counts().items():
            sources[source] = sources.get(source, 0) + count
    gpu_ms = gpu_estimate_ms(contender, records)
    return {
        "draft": contender.label, "acceptance": contender.spec.acceptance.name,
        "num_draft_tokens": contender.spec.num_draft_tokens if contender.spec.speculative else 0,
        "tree": contender.spec.shape.name if contender.spec.speculative else "",
        "actions": len(records),
        "passes_per_action": float(passes.mean()),
        "acceptance_length": ACTION_DIM * len(records) / float(passes.sum()),
        "accept_rate_by_position": [float(np.mean(judged[p])) for p in sorted(judged)],
        "ms_median": median, "ms_p90": float(np.percentile(ms, 90)),
        "draft_ms_mean": float(np.mean([s.draft_ms for s in records])),
        "verify_ms_mean": float(np.mean([s.verify_ms for s in records])),
        "kept_sources": sources,
        "gpu_ms": gpu_ms, "gpu_speedup": (ar_gpu_ms / gpu_ms) if ar_gpu_ms else 1.0,
        "speedup": (ar_median / median) if ar_median else 1.0,
        "same_as_ar": same_share([s.tokens for s in records], ar_tokens),
        "stopped_at_eos": sum(s.stopped_at_eos for s in records),
        "max_abs_dbin": {name: int(d) for name, d in zip(ACTION_NAMES, deviation)},
        "profiles": [{"passes": s.verifier_passes, "proposed_per_pass": s.proposed_per_pass} for s in records],
    }


def measure(args, verifier, drafts: list[ResolvedDraft]) -> list[dict]:
    contenders = configurations(args, verifier, drafts)
    observed = observations(args.episodes, args.steps_per_episode, args.seed)
    tokenizer = verifier.tokenizer
    inputs = [(episode, pixel_values(frame, True, verifier.image_normalization), prompt_token_ids(tokenizer, instruction))
              for episode, instruction, frame in observed]
    for contender in contenders:                         # warm-up: first calls allocate and dispatch slowly
        for _, pixels, prompt_ids in inputs[:args.warmup]:
            contender.decoder.decode(pixels, prompt_ids)
    records = [[] for _ in contenders]
    previous_episode = None
    for episode, pixels, prompt_ids in inputs:
        if episode != previous_episode:
            for contender in contenders:
                contender.decoder.reset_episode()
            previous_episode = episode
        for contender, record in zip(contenders, records):
            record.append(contender.decoder.decode(pixels, prompt_ids)[1])
    ar_tokens = [stats.tokens for stats in records[0]]
    ar_median = float(np.median([stats.total_ms for stats in records[0]]))
    ar_gpu_ms = gpu_estimate_ms(contenders[0], records[0])
    return [summarize(contender, record, ar_tokens, ar_median, ar_gpu_ms)
            for contender, record in zip(contenders, records)]


def markdown_table(results: list[dict]) -> str:
    lines = ["| draft | acceptance | shape | passes/action | accept len | accept rate by depth | draft ms | verify ms | "
             "ms median | ms p90 | speedup | H200 est. ms | H200 est. speedup | same as AR | EOS stops | kept from | "
             "max abs dbin (dx dy dz droll dpitch dyaw grip) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rates = " ".join(f"{rate:.2f}" for rate in r["accept_rate_by_position"]) or "-"
        deviation = " ".join(str(value) for value in r["max_abs_dbin"].values())
        kept = " ".join(f"{source} {count}" for source, count in sorted(r["kept_sources"].items())) or "-"
        lines.append(f"| {r['draft']} | {r['acceptance']} | {r['tree'] or '-'} | "
                     f"{r['passes_per_action']:.2f} | {r['acceptance_length']:.2f} | {rates} | {r['draft_ms_mean']:.1f} | "
                     f"{r['verify_ms_mean']:.1f} | {r['ms_median']:.1f} | {r['ms_p90']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['gpu_ms']:.1f} | {r['gpu_speedup']:.2f}x | {r['same_as_ar']:.1%} | {r['stopped_at_eos']} | "
                     f"{kept} | {deviation} |")
    floor = next((r["same_as_ar"] for r in results if r["draft"] == RESHAPED_AR), None)
    if floor is not None:
        lines += ["", f"AR noise floor: {floor:.1%} of actions identical to AR when only the passes' shapes "
                      f"change (row {RESHAPED_AR}); strict rows are expected near it, relaxed rows below it. "
                      f"'EOS stops': actions the verifier ended with an EOS (read from prompt + output as OpenVLA). "
                      f"Shapes: chain:K proposes K tokens in a row, tree:NODES:DEPTH:TOP_K a draft's own tree, "
                      f"hybrid:... with the previous action and retrieved continuations; 'kept from': passes whose "
                      f"kept path came from each source. H200 est.: OpenVLA-7B's ms per action for the same passes "
                      f"from the cost model (eager PyTorch on an H200 SXM, computed, not measured)."]
    return "\n".join(lines)


# --- full-size architecture -------------------------------------------------------------------

@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_random_architecture(config: VLAConfig, device: str, dtype: torch.dtype) -> OpenVLA:
    """The architecture with random weights, created directly on `device` in `dtype`."""
    with torch.device(device), default_dtype(dtype):
        return OpenVLA(config).eval()


def timed_ms(function, device: str, repeats: int) -> float:
    """Median wall time of `function()`, synchronising CUDA around each call."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    function()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        function()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def random_tree_parents(nodes: int, generator: torch.Generator) -> list[int]:
    """Parents of a random token tree for timing a tree pass: the pending token (-1: it follows the
    cache), then `nodes` proposals, each under a random earlier node."""
    return [-1] + [int(torch.randint(0, index + 1, (1,), generator=generator)) for index in range(nodes)]


def time_architecture(model: OpenVLA, device: str, repeats: int, prompt_tokens: int, tree_nodes=()) -> dict:
    """Prefill ms, ms per verifier pass over 1..7 new tokens and over the pending token and a tree
    of each of `tree_nodes` proposals (a random tree), and draft-head ms at this hidden size."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(6, model.config.image_size, model.config.image_size, generator=generator)
    prompt = [BOS_TOKEN_ID] + torch.randint(3, 29000, (prompt_tokens - 2,), generator=generator).tolist()
    prompt.append(EMPTY_TOKEN_ID)
    session = VerifierSession(model)
    prefill = session.prefill(pixels, prompt)
    # every timed pass reads its logits (.greedy()): on the CPU a VerifierStep computes them when read
    timing = {"prompt_tokens": prompt_tokens,
              "prefill_ms": timed_ms(lambda: session.prefill(pixels, prompt).greedy(), device, repeats)}
    length = session.length
    tokens = list(range(31800, 31800 + ACTION_DIM))

    def one_pass(count):
        session.extend(tokens[:count]).greedy()
        session.truncate(length)

    timing["pass_ms"] = {count: timed_ms(lambda: one_pass(count), device, repeats)
                         for count in range(1, ACTION_DIM + 1)}

    def tree_pass(nodes):
        parents = random_tree_parents(nodes, generator)
        session.verify_tree([tokens[0]] * (nodes + 1), parents).greedy()
        session.keep_path([])

    timing["tree_pass_ms"] = {nodes: timed_ms(lambda: tree_pass(nodes), device, repeats)
                              for nodes in sorted(set(tree_nodes))}
    dtype = resolve_dtype("auto", device)
    timing["draft"] = {}
    for kind in CHECKPOINT_KINDS:
        torch.manual_seed(0)
        with torch.device(device):
            head = EagleHead(kind, default_core_config(kind, model)).to_runtime(device, dtype)
        draft = EagleDraft(head, model)
        hidden, embeds = prefill.hidden, prefill.input_embeds
        begin_ms = timed_ms(lambda: draft.begin(hidden, embeds), device, repeats)
        # one step = one proposal (as spec-vla-bench gpu times it); accepting a proposal re-reads it
        # only when it passed, so accept() is not a second step
        step_ms = timed_ms(lambda: draft.propose(tokens[0], 1), device, repeats)
        timing["draft"][kind] = {"begin_ms": begin_ms, "step_ms": step_ms}
    return timing


def project(result: dict, timing: dict) -> float:
    """Projected ms per action at full size for one measured acceptance profile.

    Each action: the prefill, then one pass over 1 + proposals for each later pass (AR: 1 token
    each; a tree row's passes as the timed tree pass of its node budget); a draft head adds its
    begin, about one step per proposal and one per accept, and one per early proposal (a carrying
    head drafts those before the prefill).
    """
    draft = timing["draft"].get(result["draft"])
    tree = parse_tree_shape(result["tree"]) if result.get("tree", "").startswith(("tree", "hybrid")) else None
    total = 0.0
    for profile in result["profiles"]:
        early = profile["proposed_per_pass"][0] if profile["proposed_per_pass"] else 0
        proposed = profile["proposed_per_pass"][1:] or [0] * (profile["passes"] - 1)
        total += timing["prefill_ms"] + sum(timing["tree_pass_ms"][tree.nodes] if tree and p else
                                            timing["pass_ms"][1 + p] for p in proposed)
        if draft:
            total += draft["begin_ms"] + draft["step_ms"] * (early + sum(p + 1 for p in proposed))
    return total / len(result["profiles"])


def check_architecture_device(device: str, force: bool) -> None:
    """Refuse the 7B build where it cannot run sensibly, before any other work."""
    if not str(device).startswith("cuda") and not force:
        raise SystemExit("--arch openvla-7b builds a 7.5 B-parameter model: it needs a CUDA device "
                         f"(--arch-device, now '{device}'); pass --force to run it on '{device}' anyway")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--arch openvla-7b: CUDA is not available on this machine (see --arch-device)")


def run_architecture(args, results: list[dict]) -> dict:
    device = args.arch_device
    model = build_random_architecture(VLAConfig(), device, torch.bfloat16)
    trees = [tree.nodes for _, tree in shapes(args) if tree is not None]
    timing = time_architecture(model, device, args.arch_repeats, args.arch_prompt_tokens, trees)
    del model
    ar = next(r for r in results if r["draft"] == AR)
    ar_ms = project(ar, timing)
    timing["projected"] = [{"draft": r["draft"], "acceptance": r["acceptance"], "tree": r["tree"],
                            "num_draft_tokens": r["num_draft_tokens"], "ms_per_action": project(r, timing),
                            "speedup": ar_ms / project(r, timing)} for r in results]
    return timing


def architecture_table(timing: dict) -> str:
    passes = " ".join(f"{count}:{ms:.1f}" for count, ms in timing["pass_ms"].items())
    lines = [f"openvla-7b (random weights, bf16): prefill {timing['prefill_ms']:.1f} ms; ms per verifier pass by "
             f"tokens {passes}; draft begin/step ms: " +
             ", ".join(f"{kind} {d['begin_ms']:.1f}/{d['step_ms']:.2f}" for kind, d in timing["draft"].items()),
             "", "| draft | acceptance | shape | projected ms/action | projected speedup |", "|---|---|---|---|---|"]
    lines += [f"| {p['draft']} | {p['acceptance']} | {p['tree'] or '-'} | {p['ms_per_action']:.1f} | "
              f"{p['speedup']:.2f}x |" for p in timing["projected"]]
    return "\n".join(lines)


def measured_split(model: OpenVLA, args) -> dict:
    """Prefill, verifier passes and draft steps of the verifier in use on this machine, relative to
    a pass of 1 token (cost_model.measured_split), from `time_architecture` (median of
    --arch-repeats; random draft heads of the verifier's width, as the cost model counts them:
    one Mamba block, one Llama layer)."""
    timing = time_architecture(model, args.device, args.arch_repeats, args.arch_prompt_tokens)
    steps = {kind: draft["step_ms"] for kind, draft in timing["draft"].items()}
    return {"ms": {"prefill": timing["prefill_ms"], **{f"pass_{n}": ms for n, ms in timing["pass_ms"].items()},
                   **{f"{kind}_step": ms for kind, ms in steps.items()}},
            "split": cost_model.measured_split(timing["prefill_ms"], timing["pass_ms"], steps)}


def split_table(split: dict, verifier_name: str, args) -> str:
    pass_tokens = min(1 + max(args.num_draft_tokens), ACTION_DIM)
    ms = split["ms"]
    return (f"Cost split of {verifier_name} on {args.device} ({torch.get_num_threads()} torch thread(s), median of "
            f"{args.arch_repeats}; prefill {ms['prefill']:.1f} ms, pass of 1 token {ms['pass_1']:.2f} ms, of "
            f"{pass_tokens} {ms[f'pass_{pass_tokens}']:.2f} ms; draft steps of random heads at the verifier's width) "
            "beside OpenVLA-7B's, computed by `spec-vla-bench cost`:\n\n"
            + cost_model.split_comparison(split["split"], pass_tokens=pass_tokens))


def benchmark(args, drafts: list[ResolvedDraft]) -> dict:
    """Load the verifier, measure every configuration with `drafts` (resolve_drafts), print the
    tables and write --markdown / --json; returns what --json holds. CommandError for what only
    shows now (no CUDA, --threads)."""
    apply_runtime_arguments(args)
    if args.arch == "openvla-7b":
        try:
            check_architecture_device(args.arch_device, args.force)
        except SystemExit as refusal:
            raise CommandError(str(refusal.code)) from None
    verifier = load_verifier(args.verifier, args.device, args.dtype)
    results = measure(args, verifier, drafts)
    output = {"verifier": verifier.name, "device": args.device, "observations": results[0]["actions"],
              "seed": args.seed, "threads": torch.get_num_threads(),
              "ar_noise_floor": next(r["same_as_ar"] for r in results if r["draft"] == RESHAPED_AR),
              "results": results}
    table = markdown_table(results)
    output["split"] = measured_split(verifier.model, args)
    table += "\n\n" + split_table(output["split"], verifier.name, args)
    if args.arch == "openvla-7b":
        output["openvla_7b"] = run_architecture(args, results)
        table += "\n\n" + architecture_table(output["openvla_7b"])
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(output, indent=1) + "\n")
    return output
