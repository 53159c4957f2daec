"""A draft head's probabilities, calibrated for building trees.

EAGLE-2 ranks tree nodes by the draft's cumulative probability, standing in for the chance that
the verifier accepts the node's path, so the tree is only as good as that stand-in. A head
trained on hidden-state regression plus a little cross-entropy (spec-vla-train-draft) is far from
calibrated: on the miniature the packaged heads give their top choice ~5 % (softmax over the 256
action logits) while it is the verifier's token about half the time.

One temperature T on the action logits fixes that. T minimizes the Brier score of the top
CALIBRATION_TOP_K candidates (their probabilities against whether each is the verifier's token),
on teacher-forced positions a1..a6 of held-out observations (`teacher_forced_logits`). The usual
temperature scaling (minimum negative log-likelihood) is not the criterion: it is dominated by the
positions where the verifier's token has a tiny draft probability, and on the packaged heads it
leaves the top choice at 0.3 for 0.5 accuracy. The fitted T goes into draft.json (`calibration`,
written by `python -m spec_vla_ros.training.calibrate`); a head without one keeps T = 1. A chain
(argmax) does not depend on T.
"""
from __future__ import annotations

import math

import torch

from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MIN

CALIBRATION_TOP_K = 8
TEMPERATURE_RANGE = (1e-3, 1e2)      # searched on a log grid
GRID_POINTS = 400


def temperature_of(config: dict) -> float:
    """The calibrated temperature in a draft.json (1.0 where it has none)."""
    return float((config.get("calibration") or {}).get("temperature", 1.0))


def top_k_brier(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                top_k: int = CALIBRATION_TOP_K) -> float:
    """Mean over rows of sum over the top_k candidates of (probability - [candidate is the target])^2."""
    top = torch.softmax(logits.float() / temperature, dim=-1).topk(top_k, dim=-1)
    hits = (top.indices == targets[:, None]).float()
    return float(((top.values - hits) ** 2).sum(-1).mean())


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, top_k: int = CALIBRATION_TOP_K) -> tuple[float, float]:
    """[n, 256] action logits and [n] target bins -> (temperature, its top-k Brier score): the best
    of a log-spaced grid over TEMPERATURE_RANGE."""
    if logits.ndim != 2 or targets.shape != (logits.shape[0],) or not len(targets):
        raise ValueError(f"fit_temperature needs [n, bins] logits and [n] targets, got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    low, high = (math.log(value) for value in TEMPERATURE_RANGE)
    grid = [math.exp(low + (high - low) * index / (GRID_POINTS - 1)) for index in range(GRID_POINTS)]
    return min(((t, top_k_brier(logits, targets, t, top_k)) for t in grid), key=lambda pair: pair[1])


@torch.inference_mode()
def teacher_forced_logits(draft, hidden: torch.Tensor, input_embeds: torch.Tensor, prompt_length: int,
                          tokens: list[int]) -> torch.Tensor:
    """An EagleDraft's action logits for a1..a6 of one action, each drafted from the verifier's
    true states of the tokens before it (as the first proposal of a pass is): `hidden` and
    `input_embeds` of a prefill over the prompt and a0..a5, `tokens` the 7 greedy tokens.
    Leaves the draft at the end of the action's a0..a5."""
    from .eagle_head import action_logits

    draft.begin(hidden[:prompt_length], input_embeds[:prompt_length])
    core, rows = draft.head.core, []
    for index in range(ACTION_DIM - 1):
        if index:
            draft.accept([tokens[index - 1]], hidden[prompt_length + index - 1:prompt_length + index])
        committed = core.snapshot(draft.state)
        predicted, state = draft.head.step(draft.pending, draft._token_input(tokens[index]), draft.state)
        draft.state = core.restore(state, committed)          # the step is a guess, not committed
        rows.append(action_logits(predicted[0], draft.action_rows).float())
    return torch.stack(rows)


def target_bins(tokens: list[int]) -> torch.Tensor:
    """a1..a6 as bins 0..255 (the targets of teacher_forced_logits)."""
    return torch.tensor([token - ACTION_TOKEN_MIN for token in tokens[1:ACTION_DIM]])
