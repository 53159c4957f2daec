"""Calibrate a draft head for trees: fit its temperature (drafts/calibration.py) on held-out
observations and record it in the checkpoint's draft.json.

    python -m spec_vla_ros.training.calibrate CHECKPOINT_DIR [--verifier miniature] [--scenes 200]
        [--seed 7680] [--threads 1]

Observations are seeded synthetic scenes (training/collect.synthetic_episode, one control step
each); the default seeds 7680.. lie in the validation split of the packaged heads' first trace
set (the last 20 % of seeds 0..9599), so the heads never trained on them. Actions the verifier
ended early (EOS) or answered with a non-action token are skipped.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..decoding.decoder import Decoder
from ..drafts.calibration import CALIBRATION_TOP_K, fit_temperature, target_bins, teacher_forced_logits
from ..drafts.checkpoints import CONFIG, load_head
from ..drafts.eagle_head import EagleDraft
from ..vla.action_tokenizer import is_action_token
from ..vla.constants import ACTION_DIM
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.session import VerifierSession
from ..vla.verifiers import load_verifier
from .collect import synthetic_episode

CALIBRATION_SEED = 7680          # validation seeds of the packaged heads' first trace set
CALIBRATION_SCENES = 200


def calibration_data(draft: EagleDraft, verifier, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced action logits of a1..a6 and their target bins over the scenes `seeds`."""
    decoder, logits, targets = Decoder(verifier.model), [], []
    for seed in seeds:
        instruction, frames = synthetic_episode(seed, 1)
        prompt = prompt_token_ids(verifier.tokenizer, instruction)
        pixels = pixel_values(frames[0], True, verifier.image_normalization)
        tokens, stats = decoder.decode(pixels, prompt)
        if len(stats.generated) < ACTION_DIM or not all(is_action_token(token) for token in tokens):
            continue
        session = VerifierSession(verifier.model)
        step = session.prefill(pixels, prompt, tokens[:ACTION_DIM - 1])
        prompt_length = session.length - (ACTION_DIM - 1)
        logits.append(teacher_forced_logits(draft, step.hidden, step.input_embeds, prompt_length, tokens))
        targets.append(target_bins(tokens))
    return torch.cat(logits), torch.cat(targets)


def calibrate(directory, verifier_name: str = "miniature", scenes: int = CALIBRATION_SCENES,
              seed: int = CALIBRATION_SEED) -> dict:
    """Fit the temperature of the head in `directory` and write it into its draft.json; returns
    the `calibration` record."""
    directory = Path(directory)
    verifier = load_verifier(verifier_name, "cpu", "auto")
    head, config = load_head(directory)
    draft = EagleDraft(head, verifier.model)
    logits, targets = calibration_data(draft, verifier, range(seed, seed + scenes))
    temperature, brier = fit_temperature(logits, targets)
    top = torch.softmax(logits / temperature, dim=-1).max(dim=-1).values
    record = {"temperature": temperature, "criterion": f"Brier score of the top {CALIBRATION_TOP_K} candidates",
              "brier": brier, "positions": len(targets), "scenes": f"synthetic seeds {seed}..{seed + scenes - 1}",
              "top1_probability": float(top.mean()),
              "top1_accuracy": float((logits.argmax(dim=-1) == targets).float().mean())}
    config["calibration"] = record
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spec_vla_ros.training.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a draft head's checkpoint directory (draft.json, draft.safetensors)")
    parser.add_argument("--verifier", default="miniature")
    parser.add_argument("--scenes", type=int, default=CALIBRATION_SCENES)
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(calibrate(args.checkpoint, args.verifier, args.scenes, args.seed), indent=2))


if __name__ == "__main__":
    main()
