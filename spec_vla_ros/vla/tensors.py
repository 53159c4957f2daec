"""Named tensors (or row ranges of them) read straight from a checkpoint's safetensors files.

For work that needs a few of the verifier's weights and never runs it, such as training a
draft head (the token embedding and the lm_head's 256 action rows): nothing is built, and
only the requested bytes are read. The file holding a key comes from
`model.safetensors.index.json`'s `weight_map` (sharded checkpoints) or is the single
`model.safetensors`; the key names are the model's state-dict names (vla/model.py), e.g.

    language_model.model.embed_tokens.weight   [32064, hidden]
    language_model.lm_head.weight              [32064, hidden]

Tensors come back in the checkpoint's own dtype unless `dtype` says otherwise. Every failure
(a missing key, an unreadable, truncated or git-lfs-pointer weight file) raises
CheckpointError naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .checkpoint import SINGLE_WEIGHTS, WEIGHTS_INDEX, CheckpointError

EMBED_TOKENS = "language_model.model.embed_tokens.weight"
LM_HEAD = "language_model.lm_head.weight"


def file_holding(directory: Path, key: str) -> Path:
    """The weight file that holds `key` (index's weight_map, or the single model.safetensors)."""
    directory = Path(directory)
    index = directory / WEIGHTS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index}: not a safetensors index with a weight_map ({error})") from None
        if key not in weight_map:
            raise CheckpointError(f"{index}: no tensor '{key}' (is this an OpenVLA checkpoint?)")
        path = directory / weight_map[key]
    elif (directory / SINGLE_WEIGHTS).is_file():
        path = directory / SINGLE_WEIGHTS
    else:
        raise CheckpointError(f"{directory}: no weights found; expected {WEIGHTS_INDEX} with its shards or "
                              f"{SINGLE_WEIGHTS}")
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file named by {WEIGHTS_INDEX} is missing")
    return path


def read_tensor(directory, key: str, rows: slice | None = None, dtype: torch.dtype | None = None,
                device: str = "cpu") -> torch.Tensor:
    """`key` from the checkpoint directory, or only its `rows` (a slice of the first dimension,
    read without loading the rest); in the stored dtype unless `dtype` is given."""
    path = file_holding(Path(directory), key)
    try:
        with safe_open(path, framework="pt", device=str(device)) as weights:
            if key not in weights.keys():
                raise CheckpointError(f"{path}: no tensor '{key}' (is this an OpenVLA checkpoint?)")
            tensor = weights.get_tensor(key) if rows is None else weights.get_slice(key)[rows]
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated, a git-lfs pointer, or "
                              f"corrupted): {error}") from None
    return tensor if dtype is None else tensor.to(dtype)
