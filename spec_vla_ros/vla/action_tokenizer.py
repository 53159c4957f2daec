"""Actions <-> OpenVLA action token ids <-> bin indices, and de-normalization.

OpenVLA discretizes each normalized action dimension into 256 uniform bins over [-1, 1]
and maps bin `b` (1..256, from `np.digitize`) to the token id `32000 - b`, overwriting the
least used Llama-2 tokens. Decoding maps an id back to one of the 255 bin centers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import (ACTION_DIM, ACTION_NAMES, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, BIN_CENTERS, BIN_EDGES,
                        DEFAULT_UNNORM_KEY, FALLBACK_UNNORM_KEYS, LIBERO_GOAL_MASK, LIBERO_GOAL_Q01,
                        LIBERO_GOAL_Q99, TOKENIZER_VOCAB_SIZE)


def actions_to_token_ids(normalized_actions) -> np.ndarray:
    """Normalized actions in [-1, 1] (clipped) -> token ids in 31744..31999."""
    clipped = np.clip(np.asarray(normalized_actions, dtype=np.float64), -1.0, 1.0)
    return TOKENIZER_VOCAB_SIZE - np.digitize(clipped, BIN_EDGES)


def token_ids_to_bin_indices(token_ids) -> np.ndarray:
    """Token ids -> indices into the 255 bin centers (OpenVLA clips out-of-range ids)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    return np.clip(TOKENIZER_VOCAB_SIZE - ids - 1, 0, BIN_CENTERS.shape[0] - 1)


def token_ids_to_actions(token_ids) -> np.ndarray:
    """Token ids -> normalized actions (bin centers)."""
    return BIN_CENTERS[token_ids_to_bin_indices(token_ids)]


def validate_action(values) -> np.ndarray:
    """A 7-DoF action as a float64 array; ValueError naming the problem (type, length, NaN/inf)."""
    try:
        action = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"action is not a sequence of numbers: {error}") from error
    if action.shape[0] != ACTION_DIM:
        raise ValueError(f"action has {action.shape[0]} values, expected {ACTION_DIM} ({' '.join(ACTION_NAMES)})")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action contains NaN or inf: {action.tolist()}")
    return action


def is_action_token(token_id: int) -> bool:
    return ACTION_TOKEN_MIN <= int(token_id) <= ACTION_TOKEN_MAX


@dataclass(frozen=True)
class NormStats:
    """Per-dimension 1st/99th percentiles and the mask of dimensions to de-normalize."""

    q01: tuple
    q99: tuple
    mask: tuple
    unnorm_key: str = DEFAULT_UNNORM_KEY

    def __post_init__(self):
        for name in ("q01", "q99", "mask"):
            if len(getattr(self, name)) != ACTION_DIM:
                raise ValueError(f"norm stats '{name}' for '{self.unnorm_key}' has "
                                 f"{len(getattr(self, name))} values, expected {ACTION_DIM}")

    def unnormalize(self, normalized_actions) -> np.ndarray:
        """`0.5 * (x + 1) * (q99 - q01) + q01` where the mask is true; passthrough elsewhere."""
        x = np.asarray(normalized_actions, dtype=np.float64)
        q01, q99 = np.asarray(self.q01), np.asarray(self.q99)
        mask = np.asarray(self.mask, dtype=bool)
        return np.where(mask, 0.5 * (x + 1.0) * (q99 - q01) + q01, x)

    def to_json_entry(self) -> dict:
        """The `dataset_statistics.json` layout OpenVLA checkpoints use."""
        return {"action": {"q01": list(self.q01), "q99": list(self.q99), "mask": list(self.mask)}}


LIBERO_GOAL_STATS = NormStats(LIBERO_GOAL_Q01, LIBERO_GOAL_Q99, LIBERO_GOAL_MASK, DEFAULT_UNNORM_KEY)


def select_norm_stats(norm_stats: dict, unnorm_key: str = DEFAULT_UNNORM_KEY) -> NormStats:
    """Pick `unnorm_key` from a checkpoint's statistics dict, falling back as OpenVLA's LIBERO runs do."""
    candidates = [unnorm_key] + [k for k in FALLBACK_UNNORM_KEYS if unnorm_key == DEFAULT_UNNORM_KEY]
    for key in candidates:
        if key in norm_stats:
            action = norm_stats[key]["action"]
            mask = action.get("mask", [True] * (ACTION_DIM - 1) + [False])
            return NormStats(tuple(action["q01"]), tuple(action["q99"]), tuple(bool(m) for m in mask), key)
    raise KeyError(f"unnorm_key '{unnorm_key}' not in the checkpoint's statistics "
                   f"(tried {candidates}; available: {sorted(norm_stats)})")


def load_norm_stats(checkpoint_dir: Path, unnorm_key: str = DEFAULT_UNNORM_KEY) -> NormStats:
    """Statistics from `dataset_statistics.json`, or else `config.json`'s `norm_stats`."""
    checkpoint_dir = Path(checkpoint_dir)
    stats_file = checkpoint_dir / "dataset_statistics.json"
    if stats_file.exists():
        return select_norm_stats(json.loads(stats_file.read_text()), unnorm_key)
    config = json.loads((checkpoint_dir / "config.json").read_text())
    if "norm_stats" not in config:
        raise FileNotFoundError(f"{checkpoint_dir}: no dataset_statistics.json and no 'norm_stats' in config.json")
    return select_norm_stats(config["norm_stats"], unnorm_key)
