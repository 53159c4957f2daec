"""Draft kinds in one table: what each needs, how its checkpoint resolves, how it loads.

Two steps, so the checks run once and loading reuses their result:

- `resolve(kind, checkpoint, verifier) -> ResolvedDraft`: cheap (JSON and a safetensors header,
  no weights). Refuses an unknown kind, a missing or corrupted checkpoint and one trained for
  another verifier, each with a one-line ValueError. Safe in a parameter callback.
- `load(resolved, loaded_verifier) -> Draft | None`: builds the draft from the resolved
  directory and config without reading or checking the config again (None for `ar`).

`mamba` and `llama` need a checkpoint trained for the verifier in use; `""` selects the one
packaged under drafts/checkpoints/<kind>/, trained for the embedded miniature. A checkpoint
path is either one draft's directory or, laid out like the packaged ones, a directory with a
sub-directory per kind: then one `draft_checkpoint` serves every draft, and switching `draft`
alone (`ros2 param set ... draft llama`) picks the matching one.

Hybrid trees (drafts/hybrid.py) retrieve from an action datastore (drafts/retrieval.py): the
`actions.safetensors` in the head's checkpoint directory or in the directory of drafts above it
(for `history`: in `draft_checkpoint`, or the packaged one for the miniature). It must have been
made with the verifier in use; a draft without one retrieves from its episode's actions only.
A head's draft.json may hold its tree `calibration` (the temperature of drafts/calibration.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import LlamaConfig

from ..vla.checkpoint import LoadedVerifier, resolve_dtype, vla_config_from_hf
from ..vla.miniature import MINIATURE, MINIATURE_NAME, MINIATURE_TEXT_CONFIG
from .base import Draft
from .calibration import temperature_of
from .checkpoints import CONFIG, build_head, check_compatible, read_draft_config
from .eagle_head import EagleDraft, early_guess_mode
from .history import HistoryDraft
from .retrieval import datastore_verifier, find_datastore, read_datastore
from .kinds import AR, CHECKPOINT_KINDS, DRAFT_NAMES, SPECULATIVE_KINDS, check_kind  # noqa: F401 (re-exported)

PACKAGED_CHECKPOINTS = Path(__file__).parent / "checkpoints"


@dataclass(frozen=True)
class ResolvedDraft:
    """A draft whose cheap checks passed: what `load` needs, nothing to check again.

    kind: a key of DRAFT_KINDS. checkpoint: as given ('' = the packaged one). directory and
    config: the checkpoint directory and its draft.json (None for kinds without a checkpoint).
    verifier_name / hidden_size: the verifier it was checked against (hidden size None if unknown).
    datastore: the action datastore a hybrid tree retrieves from (None: none found).
    """
    kind: str
    checkpoint: str = ""
    directory: Path | None = None
    config: dict | None = None
    verifier_name: str = ""
    hidden_size: int | None = None
    datastore: Path | None = None


def _no_draft(resolved: ResolvedDraft, verifier: LoadedVerifier) -> None:
    return None


def _history_draft(resolved: ResolvedDraft, verifier: LoadedVerifier) -> Draft:
    return HistoryDraft()


def _head_draft(resolved: ResolvedDraft, verifier: LoadedVerifier) -> Draft:
    """bf16 on CUDA, fp32 on CPU, on the verifier's device."""
    dtype = resolve_dtype("auto", str(verifier.device))
    head = build_head(resolved.directory, resolved.config, verifier.device, dtype)
    return EagleDraft(head, verifier.model, early_guess_mode(resolved.config), temperature_of(resolved.config))


@dataclass(frozen=True)
class DraftKind:
    name: str
    needs_checkpoint: bool
    build: Callable[[ResolvedDraft, LoadedVerifier], Draft | None]
    description: str


DRAFT_KINDS: dict[str, DraftKind] = {kind.name: kind for kind in (
    DraftKind(AR, False, _no_draft, "no draft: autoregressive decoding, one verifier pass per token"),
    DraftKind("mamba", True, _head_draft, "EAGLE-style head with a Mamba core (trained checkpoint)"),
    DraftKind("llama", True, _head_draft, "EAGLE-style head with one Llama layer (trained checkpoint)"),
    DraftKind("history", False, _history_draft, "the previous action's tokens, no model"),
)}
# The names live in kinds.py (read without the model stack); this table must hold exactly those.
assert tuple(DRAFT_KINDS) == DRAFT_NAMES, (tuple(DRAFT_KINDS), DRAFT_NAMES)
assert CHECKPOINT_KINDS == tuple(name for name, kind in DRAFT_KINDS.items() if kind.needs_checkpoint)


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


def draft_checkpoint_dir(kind: str, checkpoint: str, verifier_name: str) -> Path:
    """Where a `kind` head's checkpoint lies: `checkpoint`, its `kind/` sub-directory, or the
    packaged one ('' given, miniature only: ValueError for another verifier). No file is checked."""
    if checkpoint:
        path = Path(checkpoint)
        if not (path / CONFIG).exists() and (path / kind / CONFIG).exists():
            return path / kind                 # a directory of drafts, one per kind
        return path
    if verifier_name != MINIATURE_NAME:
        raise ValueError(f"draft '{kind}' needs draft_checkpoint for verifier '{verifier_name}': the packaged "
                         f"drafts are trained for the embedded miniature only (train one with "
                         "spec-vla-collect and spec-vla-train-draft)")
    return PACKAGED_CHECKPOINTS / kind


def resolve(kind: str, checkpoint: str, verifier: str, hidden_size: int | None = None) -> ResolvedDraft:
    """Check a draft without loading weights; the result is what `load` uses.

    kind: a key of DRAFT_KINDS. checkpoint: a directory or '' (packaged). verifier: `miniature`,
    an OpenVLA directory or a loaded verifier's name; hidden_size: the loaded verifier's, when
    the name alone cannot tell it. Raises ValueError (DraftCheckpointError for the checkpoint)."""
    check_kind(kind)
    if kind == AR:
        return ResolvedDraft(kind, checkpoint)
    verifier_name, known_hidden_size = verifier_identity(verifier)
    if not DRAFT_KINDS[kind].needs_checkpoint:
        place = Path(checkpoint) if checkpoint else PACKAGED_CHECKPOINTS if verifier_name == MINIATURE_NAME else None
        return ResolvedDraft(kind, checkpoint, verifier_name=verifier_name,
                             datastore=checked_datastore(place, verifier_name))
    hidden_size = hidden_size or known_hidden_size
    directory = draft_checkpoint_dir(kind, checkpoint, verifier_name)
    config = read_draft_config(directory)
    check_compatible(config, directory, kind, verifier_name, hidden_size)
    return ResolvedDraft(kind, checkpoint, directory, config, verifier_name, hidden_size,
                         checked_datastore(directory, verifier_name))


def checked_datastore(directory: Path | None, verifier_name: str) -> Path | None:
    """The action datastore beside a checkpoint (drafts/retrieval.find_datastore), after checking
    it was made with this verifier (its header only); ValueError naming both otherwise."""
    path = find_datastore(directory)
    if path is not None:
        made_with = datastore_verifier(path)
        if made_with != verifier_name:
            raise ValueError(f"{path} holds actions of verifier '{made_with}', not of '{verifier_name}' (make one "
                             "from this verifier's traces, or move it away)")
    return path


def load(resolved: ResolvedDraft, verifier: LoadedVerifier) -> Draft | None:
    """A fresh draft instance for the loaded verifier (None for `ar`), from the resolved checkpoint.

    ValueError if `resolved` was checked against another verifier (compared in memory only)."""
    if resolved.config is not None:
        if resolved.verifier_name != verifier.name or resolved.hidden_size not in (None, verifier.model.hidden_size):
            raise ValueError(f"draft '{resolved.kind}' was resolved for verifier '{resolved.verifier_name}', "
                             f"not for the loaded '{verifier.name}'")
    draft = DRAFT_KINDS[resolved.kind].build(resolved, verifier)
    if draft is not None and resolved.datastore is not None:
        draft.datastore = read_datastore(resolved.datastore)
    return draft


# One-call forms for callers that check or load a single draft once (scripts, tests).

def load_draft(kind: str, checkpoint: str, verifier: LoadedVerifier) -> Draft | None:
    """`load(resolve(...))` against a loaded verifier: a fresh draft, None for `ar`."""
    return load(resolve(kind, checkpoint, verifier.name, verifier.model.hidden_size), verifier)
