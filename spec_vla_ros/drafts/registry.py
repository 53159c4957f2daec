"""Drafts by name: cheap validation for parameter callbacks, and loading.

`mamba` and `llama` need a checkpoint trained for the verifier in use; `""` selects the one
packaged under drafts/checkpoints/<name>/, trained for the embedded miniature. A checkpoint
path is either one draft's directory or, laid out like the packaged ones, a directory with a
sub-directory per kind: then one `draft_checkpoint` serves every draft, and switching `draft`
alone (`ros2 param set ... draft llama`) picks the matching one.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import LlamaConfig

from ..vla.checkpoint import (MINIATURE, MINIATURE_SEED, MINIATURE_TEXT_CONFIG, LoadedVerifier, resolve_dtype,
                              vla_config_from_hf)
from .base import Draft
from .checkpoints import CONFIG, check_compatible, load_head, read_draft_config
from .eagle_head import HEAD_KINDS, EagleDraft
from .history import HistoryDraft

DRAFT_NAMES = ("none", "mamba", "llama", "history")
PACKAGED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
MINIATURE_NAME = f"{MINIATURE}-seed{MINIATURE_SEED}"


def verifier_identity(verifier: str) -> tuple[str, int | None]:
    """(name, hidden size) of `miniature`, of an OpenVLA directory (from its config.json, cheaply),
    or of a loaded verifier's name (hidden size unknown)."""
    if verifier == MINIATURE:
        return MINIATURE_NAME, MINIATURE_TEXT_CONFIG["hidden_size"]
    config_file = Path(verifier) / "config.json"
    if config_file.is_file():
        hf_config = json.loads(config_file.read_text())
        name = hf_config.get("spec_vla_ros", {}).get("name", Path(verifier).name)
        return name, LlamaConfig(**vla_config_from_hf(hf_config).text_config).hidden_size
    return verifier, None


def draft_checkpoint_dir(name: str, checkpoint: str, verifier_name: str) -> Path:
    if checkpoint:
        path = Path(checkpoint)
        if not (path / CONFIG).exists() and (path / name / CONFIG).exists():
            return path / name                 # a directory of drafts, one per kind
        return path
    if verifier_name != MINIATURE_NAME:
        raise ValueError(f"draft '{name}' needs draft_checkpoint for verifier '{verifier_name}': the packaged "
                         f"drafts are trained for the embedded miniature only (train one with "
                         "spec-vla-collect and spec-vla-train-draft)")
    return PACKAGED_CHECKPOINTS / name


def check_draft_config(name: str, checkpoint: str, verifier: str, hidden_size: int | None = None) -> None:
    """Raise ValueError (unknown draft, missing or corrupted checkpoint, checkpoint trained for
    another verifier) without loading any weights. `verifier` is `miniature`, an OpenVLA
    directory or a loaded verifier's name."""
    if name not in DRAFT_NAMES:
        raise ValueError(f"draft '{name}' is unknown; expected one of {DRAFT_NAMES}")
    if name not in HEAD_KINDS:
        return
    verifier_name, known_hidden_size = verifier_identity(verifier)
    directory = draft_checkpoint_dir(name, checkpoint, verifier_name)
    check_compatible(read_draft_config(directory), directory, name, verifier_name, hidden_size or known_hidden_size)


def load_draft(name: str, checkpoint: str, verifier: LoadedVerifier) -> Draft | None:
    """A fresh draft instance (None for `none`: autoregressive decoding) on the verifier's device;
    bf16 on CUDA, fp32 on CPU."""
    check_draft_config(name, checkpoint, verifier.name, verifier.model.hidden_size)
    if name == "none":
        return None
    if name == "history":
        return HistoryDraft()
    head, _ = load_head(draft_checkpoint_dir(name, checkpoint, verifier.name), verifier.device,
                        resolve_dtype("auto", str(verifier.device)))
    return EagleDraft(head, verifier.model)
