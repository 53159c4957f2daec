#!/usr/bin/env python
"""How often the miniature verifier has near-tied argmaxes, and how often strict speculative
decoding and AR's noise floor reproduce AR's actions on fresh inputs (the README's "Lossless
decoding, as it holds").

Fresh observations as test/test_speculative.py draws them (random uint8 images of random size,
a LIBERO-GOAL instruction with three random words), decoded in order as one episode by:
- AR, keeping the logits row of each of its 7 tokens: the smallest top-2 margin per action;
- AR with every verifier pass one position longer (decoding/noise_floor.py: AR's noise floor);
- strict speculative decoding with the packaged mamba and llama drafts and history, k tokens.
Per configuration: the share of actions identical to AR's and, for each action that differs, AR's
logit gap between its own token and the other one at the first token where they part.

    nice -n 10 .venv/bin/python scripts/near_ties.py --actions 200 --seed 0 --out docs/lossless

writes near_ties.json and near_ties.md under --out (miniature, CPU, float32, one torch thread).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sim_bridge.constants import LIBERO_GOAL_INSTRUCTIONS
from spec_vla_ros.decoding.acceptance import STRICT, STRICT_TIE_TOLERANCE_FP32
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.decoding.noise_floor import RESHAPED_AR, reshaped_ar_decoder
from spec_vla_ros.drafts.registry import load_draft
from spec_vla_ros.vla.miniature import build_miniature
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import VerifierSession

WORDS = ["the", "bowl", "plate", "stove", "open", "drawer", "put", "on"]
MARGINS = (1e-6, 1e-5, STRICT_TIE_TOLERANCE_FP32)
DRAFTS = ("mamba", "llama", "history")


class RecordingSession(VerifierSession):
    """Keeps the logits row of every generated position (AR: one per pass)."""

    def __init__(self, model, rows: list):
        super().__init__(model)
        self.rows = rows

    def _forward(self, embeds, **options):
        step = super()._forward(embeds, **options)
        self.rows.append(step.logits[-1].clone())
        return step


def fresh_observations(verifier, count: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(count):
        size = int(rng.integers(64, 300))
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        instruction = f"{LIBERO_GOAL_INSTRUCTIONS[int(rng.integers(0, 10))]} {' '.join(rng.choice(WORDS, 3))}"
        made.append((pixel_values(image, True, verifier.image_normalization),
                     prompt_token_ids(verifier.tokenizer, instruction)))
    return made


def first_gap(tokens: list[int], ar_tokens: list[int], ar_rows: torch.Tensor) -> float:
    """AR's logit of its own token minus that of the other configuration's, where they first part."""
    position = next((i for i, (a, b) in enumerate(zip(tokens, ar_tokens)) if a != b), None)
    if position is None:                   # one stopped at an EOS where the other went on
        return float("nan")
    return float(ar_rows[position, ar_tokens[position]] - ar_rows[position, tokens[position]])


def run(actions: int, seed: int, k: int) -> dict:
    torch.set_num_threads(1)
    verifier = build_miniature()
    model = verifier.model
    rows: list = []
    ar = Decoder(model, session_factory=lambda: RecordingSession(model, rows))
    others = {RESHAPED_AR: reshaped_ar_decoder(model),
              **{name: Decoder(model, load_draft(name, "", verifier), k, STRICT) for name in DRAFTS}}
    margins, agreement = [], {name: [] for name in others}
    gaps = {name: [] for name in others}
    started = time.monotonic()
    for pixels, prompt in fresh_observations(verifier, actions, seed):
        rows.clear()
        _, ar_stats = ar.decode(pixels, prompt)
        ar_rows = torch.stack(rows)
        top = ar_rows[:len(ar_stats.generated)].topk(2, dim=-1).values
        margins.append(float((top[:, 0] - top[:, 1]).min()))
        for name, decoder in others.items():
            _, stats = decoder.decode(pixels, prompt)
            agreement[name].append(stats.generated == ar_stats.generated)
            if stats.generated != ar_stats.generated:
                gaps[name].append(first_gap(stats.generated, ar_stats.generated, ar_rows))
    margins = np.array(margins)
    return {
        "script": "scripts/near_ties.py", "actions": actions, "seed": seed, "num_draft_tokens": k,
        "verifier": verifier.name, "device": "cpu", "dtype": "float32", "torch_threads": 1,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "seconds": round(time.monotonic() - started, 1),
        "actions_with_margin_below": {f"{m:g}": float((margins < m).mean()) for m in MARGINS},
        "smallest_margin": float(margins.min()),
        "same_as_ar": {name: float(np.mean(same)) for name, same in agreement.items()},
        "differences": {name: len(values) for name, values in gaps.items()},
        "largest_gap_where_different": {name: max(values) if values else None for name, values in gaps.items()},
    }


def markdown(result: dict) -> str:
    lines = [f"Fresh random observations: {result['actions']} actions, seed {result['seed']}, "
             f"{result['verifier']}, CPU, float32, {result['torch_threads']} torch thread, strict k = "
             f"{result['num_draft_tokens']} ({result['script']}, {result['seconds']} s).", "",
             "| AR actions whose smallest top-2 margin is below | share |", "|---|---|"]
    lines += [f"| {margin} | {share:.1%} |" for margin, share in result["actions_with_margin_below"].items()]
    lines += ["", "| configuration | same actions as AR | actions that differ | largest AR logit gap where they part |",
              "|---|---|---|---|"]
    for name, share in result["same_as_ar"].items():
        gap = result["largest_gap_where_different"][name]
        lines.append(f"| {name} | {share:.1%} | {result['differences'][name]} | "
                     f"{'-' if gap is None else f'{gap:.2g}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--actions", type=int, default=200, help="fresh observations to decode")
    parser.add_argument("--seed", type=int, default=0, help="seed of the observations")
    parser.add_argument("--num-draft-tokens", type=int, default=4, help="k of the strict drafts")
    parser.add_argument("--out", type=Path, help="directory for near_ties.json and near_ties.md")
    args = parser.parse_args()
    result = run(args.actions, args.seed, args.num_draft_tokens)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "near_ties.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "near_ties.md").write_text(text)


if __name__ == "__main__":
    main()
