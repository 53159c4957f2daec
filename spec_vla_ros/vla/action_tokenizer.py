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
EMBEDDED_NORM_STATS = {DEFAULT_UNNORM_KEY: LIBERO_GOAL_STATS.to_json_entry()}   # the miniature's statistics


def norm_stats_from_entry(entry, unnorm_key: str) -> NormStats:
    """One `{"action": {"q01", "q99", "mask"?}}` entry as NormStats; ValueError naming what is malformed.

    Without a `mask` every dimension is de-normalized, as OpenVLA's `predict_action` does
    (`mask = stats.get("mask", np.ones_like(q01, dtype=bool))`).
    """
    action = entry.get("action") if isinstance(entry, dict) else None
    if not isinstance(action, dict):
        raise ValueError(f"norm stats for '{unnorm_key}' have no 'action' entry; expected "
                         "{'action': {'q01': [7 numbers], 'q99': [7 numbers], 'mask': [7 booleans] (optional)}}")
    values = {}
    for name in ("q01", "q99"):
        numbers = action.get(name)
        if (not isinstance(numbers, list) or len(numbers) != ACTION_DIM
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers)
                or not np.all(np.isfinite(numbers))):
            raise ValueError(f"norm stats '{name}' for '{unnorm_key}' must be {ACTION_DIM} finite numbers, "
                             f"got {numbers!r}")
        values[name] = tuple(float(x) for x in numbers)
    if any(high < low for low, high in zip(values["q01"], values["q99"])):
        raise ValueError(f"norm stats for '{unnorm_key}': q99 must be >= q01 in every dimension, "
                         f"got q01 {list(values['q01'])} and q99 {list(values['q99'])}")
    mask = action.get("mask", [True] * ACTION_DIM)
    if not isinstance(mask, list) or len(mask) != ACTION_DIM or not all(isinstance(m, bool) for m in mask):
        raise ValueError(f"norm stats 'mask' for '{unnorm_key}' must be {ACTION_DIM} booleans, got {mask!r}")
    return NormStats(values["q01"], values["q99"], tuple(mask), unnorm_key)


def select_norm_stats(norm_stats: dict, unnorm_key: str = DEFAULT_UNNORM_KEY) -> NormStats:
    """Pick `unnorm_key` from a checkpoint's statistics dict, falling back as OpenVLA's LIBERO runs
    do (`libero_goal` -> `libero_goal_no_noops`); ValueError naming the keys that exist."""
    candidates = [unnorm_key] + [k for k in FALLBACK_UNNORM_KEYS if unnorm_key == DEFAULT_UNNORM_KEY]
    if not isinstance(norm_stats, dict):
        raise ValueError(f"norm stats must map unnorm keys to statistics, got {type(norm_stats).__name__}")
    for key in candidates:
        if key in norm_stats:
            return norm_stats_from_entry(norm_stats[key], key)
    raise ValueError(f"unnorm_key '{unnorm_key}' is not in the checkpoint's statistics "
                     f"(tried {candidates}); expected one of {sorted(norm_stats)}")


def read_norm_stats(checkpoint_dir: Path) -> dict:
    """The statistics dict of an OpenVLA directory: `dataset_statistics.json` when it exists, or
    else `config.json`'s `norm_stats` (the loader's order); ValueError if that holds none."""
    checkpoint_dir = Path(checkpoint_dir)
    statistics_file, config_file = checkpoint_dir / "dataset_statistics.json", checkpoint_dir / "config.json"
    path = statistics_file if statistics_file.exists() else config_file
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({error})") from None
    stats = document.get("norm_stats") if path == config_file and isinstance(document, dict) else document
    if not stats or not isinstance(stats, dict):
        raise ValueError(f"{checkpoint_dir}: no action statistics; expected dataset_statistics.json "
                         "or 'norm_stats' in config.json, mapping unnorm keys to {'action': {...}}")
    return stats


def load_norm_stats(checkpoint_dir: Path, unnorm_key: str = DEFAULT_UNNORM_KEY) -> NormStats:
    """Statistics from `dataset_statistics.json`, or else `config.json`'s `norm_stats`."""
    return select_norm_stats(read_norm_stats(checkpoint_dir), unnorm_key)
