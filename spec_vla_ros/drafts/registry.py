"""Drafts by name: cheap validation for parameter callbacks, and loading."""
from __future__ import annotations

from .history import HistoryDraft

DRAFT_NAMES = ("none", "mamba", "llama", "history")


def check_draft_config(name: str, checkpoint: str, verifier: str) -> None:
    if name not in DRAFT_NAMES:
        raise ValueError(f"draft '{name}' is unknown; expected one of {DRAFT_NAMES}")
    if name in ("mamba", "llama"):
        raise ValueError(f"draft '{name}' is not implemented yet")


def load_draft(name: str, checkpoint: str, verifier):
    check_draft_config(name, checkpoint, getattr(verifier, "name", ""))
    return HistoryDraft()
