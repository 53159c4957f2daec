#!/usr/bin/env python
"""Where a speculative action's time goes on the miniature (the README's "Where the time goes"
and "What changed, and what limits the gain").

On the decode benchmark's default sample (spec-vla-bench decode: 12 synthetic scenes x 5 control
steps, seeds from 100000), miniature verifier, packaged drafts, strict, CPU, one torch thread:

1. per action, AR and the mamba and llama drafts at k = 1, decoded interleaved observation by
   observation as the benchmark does: mean decode ms, of it the draft's (its methods, timed around
   each call) and the rest (verifier passes and the loop), and verifier passes;
2. the Mamba draft's part by method (propose_early, begin, propose, accept), from (1);
3. the packaged carrying Mamba head's early guesses: drafted by the head (EARLY_FROM_HEAD) against
   the previous action's tokens it now proposes (EARLY_COPY): share of positions where they are
   equal, ms per action of the head's propose_early (its 7 steps), and verifier passes per action
   with each;
4. one head step (draft.propose(token, 1): EagleHead.step and the action logits) for each packaged
   head, median of --step-repeats: back to back, and right after a verifier pass (whose weights
   push the head's out of the cache);
5. a verifier pass of 2 new tokens against one of 1 after the prompt, logits read, median of
   --step-repeats;
6. the logits of 1, 2, 3 and 5 rows from the miniature's 32064-row lm_head: PyTorch's `linear`
   against `weight @ hidden.T` (what vla.session.lm_head_logits uses on the CPU), median of
   --step-repeats.

    nice -n 10 .venv/bin/python scripts/draft_costs.py --out docs/draft_costs

writes draft_costs.json and draft_costs.md under --out. Every time is the thread's CPU time
(time.thread_time), not wall time, so that other processes on a shared machine do not count; it
still depends on the CPU (and its caches, which other processes share): the output says where it ran.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spec_vla_ros.benchmarks.decode import observations
from spec_vla_ros.commands.benchmarks.decode import BENCH_EPISODES, BENCH_SEED, BENCH_STEPS_PER_EPISODE
from spec_vla_ros.decoding.acceptance import STRICT
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.eagle_head import EARLY_COPY, EARLY_FROM_HEAD, EagleDraft
from spec_vla_ros.drafts.registry import load_draft
from spec_vla_ros.vla.miniature import build_miniature
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import VerifierSession

MAMBA_METHODS = ("propose_early", "begin", "propose", "accept")


def cpu_ms(function, repeats: int) -> float:
    """Median CPU ms of this thread over `repeats` calls of `function` (after one untimed call)."""
    function()
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        function()
        times.append((time.thread_time() - started) * 1e3)
    return statistics.median(times)


def timed_methods(draft, names=MAMBA_METHODS) -> dict[str, list[float]]:
    """Wrap `names` of `draft` (instance attributes) to collect each call's CPU ms."""
    times = {name: [] for name in names}
    for name in names:
        method = getattr(draft, name)

        def timed(*args, _method=method, _name=name, **kwargs):
            started = time.thread_time()
            try:
                return _method(*args, **kwargs)
            finally:
                times[_name].append((time.thread_time() - started) * 1e3)
        setattr(draft, name, timed)
    return times


def sample(verifier) -> list[tuple]:
    return [(episode, pixel_values(frame, True, verifier.image_normalization),
             prompt_token_ids(verifier.tokenizer, instruction))
            for episode, instruction, frame in observations(BENCH_EPISODES, BENCH_STEPS_PER_EPISODE, BENCH_SEED)]


def decode_interleaved(decoders: dict, inputs: list[tuple]) -> tuple[dict[str, list], dict[str, list]]:
    """Each observation by every decoder in turn; (stats, CPU ms of each decode) per decoder."""
    records, cpu, previous = {name: [] for name in decoders}, {name: [] for name in decoders}, None
    for episode, pixels, prompt in inputs:
        for name, decoder in decoders.items():
            if episode != previous:
                decoder.reset_episode()
            started = time.thread_time()
            records[name].append(decoder.decode(pixels, prompt)[1])
            cpu[name].append((time.thread_time() - started) * 1e3)
        previous = episode
    return records, cpu


def per_action(verifier, inputs) -> tuple[dict, dict]:
    drafts = {name: load_draft(name, "", verifier) for name in ("mamba", "llama")}
    method_ms = {name: timed_methods(draft) for name, draft in drafts.items()}
    decoders = {"ar": Decoder(verifier.model),
                **{name: Decoder(verifier.model, draft, 1, STRICT) for name, draft in drafts.items()}}
    for decoder in decoders.values():                      # warm-up, as the benchmark's --warmup 1
        decoder.decode(*inputs[0][1:])
        decoder.reset_episode()
    for times in method_ms.values():
        for calls in times.values():
            calls.clear()
    records, cpu = decode_interleaved(decoders, inputs)
    split = {}
    for name, stats in records.items():
        draft_ms = sum(map(sum, method_ms[name].values())) / len(inputs) if name in method_ms else 0.0
        decode_ms = float(np.mean(cpu[name]))
        split[name] = {"decode_ms": decode_ms, "draft_ms": draft_ms, "verifier_and_loop_ms": decode_ms - draft_ms,
                       "passes_per_action": float(np.mean([s.verifier_passes for s in stats]))}
    methods = {name: sum(times) / len(inputs) for name, times in method_ms["mamba"].items()}
    return split, methods


def early_guesses(verifier, inputs) -> dict:
    """The head's own early guesses against the copies, on the same decoding."""
    copying = load_draft("mamba", "", verifier)
    assert copying.early_guesses == EARLY_COPY, "the packaged Mamba head copies its early guesses"
    drafting = EagleDraft(load_draft("mamba", "", verifier).head, verifier.model, early_guesses=EARLY_FROM_HEAD)
    compared, guess_ms = [], []
    propose_early = drafting.propose_early

    def compare(k):
        previous = list(drafting.carried[2][:k]) if drafting.carried is not None else None
        started = time.thread_time()
        guesses = propose_early(k)
        guess_ms.append((time.thread_time() - started) * 1e3)
        if previous is not None:
            compared.extend(g == p for g, p in zip(guesses, previous))
        return guesses
    drafting.propose_early = compare
    decoders = {"copy": Decoder(verifier.model, copying, 1, STRICT),
                "head": Decoder(verifier.model, drafting, 1, STRICT)}
    records, _ = decode_interleaved(decoders, inputs)
    return {"positions_compared": len(compared), "head_guess_equals_copy": float(np.mean(compared)),
            "head_guesses_ms_per_action": sum(guess_ms) / len(inputs),
            "passes_per_action": {name: float(np.mean([s.verifier_passes for s in stats]))
                                  for name, stats in records.items()}}


def head_steps(verifier, inputs, repeats: int) -> dict:
    """Median ms of one proposal step, back to back and right after a verifier pass."""
    _, pixels, prompt = inputs[0]
    session = VerifierSession(verifier.model)
    prefill = session.prefill(pixels, prompt)
    length, token = session.length, 31900
    result = {}
    for kind in ("mamba", "llama"):
        draft = load_draft(kind, "", verifier)
        draft.begin(prefill.hidden, prefill.input_embeds)
        draft.propose(token, 1)
        after_pass = []
        for _ in range(repeats):
            session.extend([token]).greedy()
            session.truncate(length)
            started = time.thread_time()
            draft.propose(token, 1)
            after_pass.append((time.thread_time() - started) * 1e3)
        result[kind] = {"back_to_back_ms": cpu_ms(lambda: draft.propose(token, 1), repeats),
                        "after_a_verifier_pass_ms": statistics.median(after_pass)}
    return result


def pass_ms(verifier, inputs, repeats: int) -> dict:
    """CPU ms of a verifier pass over 1 and 2 new tokens after the prompt, logits read."""
    _, pixels, prompt = inputs[0]
    session = VerifierSession(verifier.model)
    session.prefill(pixels, prompt)
    length, tokens = session.length, [31900, 31901]

    def one_pass(count):
        session.extend(tokens[:count]).greedy()
        session.truncate(length)
    return {str(count): cpu_ms(lambda: one_pass(count), repeats) for count in (1, 2)}


def lm_head_products(verifier, repeats: int) -> dict:
    """Median ms of the logits of n rows: torch's linear, and weight @ hidden.T."""
    weight = verifier.model.language_model.lm_head.weight.detach()
    generator = torch.Generator().manual_seed(0)
    result = {}
    with torch.inference_mode():
        for rows in (1, 2, 3, 5):
            hidden = torch.randn(rows, weight.shape[1], generator=generator)
            timings = {"linear": lambda: torch.nn.functional.linear(hidden, weight),
                       "matmul": lambda: weight @ hidden.T}
            result[str(rows)] = {f"{name}_ms": cpu_ms(product, repeats) for name, product in timings.items()}
    return result


def markdown(result: dict) -> str:
    split, methods, early = result["per_action"], result["mamba_methods_ms_per_action"], result["early_guesses"]
    lines = [f"{result['script']}: {result['verifier']}, the decode benchmark's default sample ({result['actions']} "
             f"actions), packaged drafts, strict, k = 1, CPU ({result['cpu']}, {result['cores']} cores), one torch "
             f"thread, load average {result['load_average']} at the start; {result['seconds']} s.", "",
             "CPU ms of the decoding thread (time.thread_time).", "",
             "| per action | decode ms | draft ms | verifier passes and loop ms | passes |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {row['decode_ms']:.1f} | {row['draft_ms']:.2f} | {row['verifier_and_loop_ms']:.1f} | "
              f"{row['passes_per_action']:.2f} |" for name, row in split.items()]
    lines += ["", "Mamba draft, ms per action by method: " +
              ", ".join(f"{name} {ms:.2f}" for name, ms in methods.items()) + ".", "",
              f"Early guesses of the packaged Mamba head: its own equal the previous action's tokens in "
              f"{early['head_guess_equals_copy']:.1%} of {early['positions_compared']} positions; drafting them "
              f"costs {early['head_guesses_ms_per_action']:.2f} ms per action; passes per action "
              f"{early['passes_per_action']['head']:.2f} drafting them, {early['passes_per_action']['copy']:.2f} "
              "copying.", "",
              "| head step (one proposal), median ms | back to back | right after a verifier pass |", "|---|---|---|"]
    lines += [f"| {kind} | {row['back_to_back_ms']:.3f} | {row['after_a_verifier_pass_ms']:.3f} |"
              for kind, row in result["head_steps"].items()]
    passes = result["passes"]
    lines += ["", f"Verifier pass: 1 token {passes['1']:.2f} ms, 2 tokens {passes['2']:.2f} ms "
                  f"({passes['2'] / passes['1']:.2f}x).", "",
              "| lm_head logits, median ms | " + " | ".join(f"{rows} row(s)" for rows in result["lm_head"]) + " |",
              "|---|" + "---|" * len(result["lm_head"])]
    for name in ("linear", "matmul"):
        label = "F.linear(hidden, weight)" if name == "linear" else "weight @ hidden.T"
        lines.append(f"| {label} | " + " | ".join(f"{row[f'{name}_ms']:.2f}" for row in result["lm_head"].values())
                     + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--step-repeats", type=int, default=150, help="head steps timed per median")
    parser.add_argument("--out", type=Path, help="directory for draft_costs.json and draft_costs.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, load = time.monotonic(), round(os.getloadavg()[0], 1)
    verifier = build_miniature()
    inputs = sample(verifier)
    split, methods = per_action(verifier, inputs)
    early = early_guesses(verifier, inputs)
    steps = head_steps(verifier, inputs, args.step_repeats)
    passes = pass_ms(verifier, inputs, args.step_repeats)
    lm_head = lm_head_products(verifier, args.step_repeats)
    result = {"script": "scripts/draft_costs.py", "verifier": verifier.name, "actions": len(inputs),
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load_average": load, "per_action": split, "mamba_methods_ms_per_action": methods,
              "early_guesses": early, "head_steps": steps, "passes": passes, "lm_head": lm_head,
              "seconds": round(time.monotonic() - started, 1)}
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "draft_costs.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "draft_costs.md").write_text(text)


if __name__ == "__main__":
    main()
