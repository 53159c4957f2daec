"""Draft checkpoints: a directory with `draft.safetensors` (head weights only) and `draft.json`.

The JSON names the head kind, its core hyperparameters, the verifier the draft was trained
for (name and hidden size) and how it was trained (including per-position token accuracy).
Every check here is cheap (JSON and the safetensors header), so a parameter callback can run
it before anything is loaded; each failure says what is wrong and what was expected.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .eagle_head import HEAD_KINDS, EagleHead

WEIGHTS = "draft.safetensors"
CONFIG = "draft.json"
FORMAT = "spec_vla_ros.draft"
FORMAT_VERSION = 1


class DraftCheckpointError(ValueError):
    """A draft checkpoint that cannot be used as it is; the message says why."""


def save_draft(directory, head: EagleHead, verifier_name: str, training: dict | None = None) -> Path:
    """Write the head's weights and its JSON config into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().contiguous().cpu() for key, value in head.state_dict().items()}
    save_file(state_dict, directory / WEIGHTS, metadata={"format": "pt"})
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": head.kind, "verifier": verifier_name,
              "hidden_size": head.hidden_size, "context": head.context, "carry": head.carry,
              "core": head.core_config, "training": training or {}}
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_draft_config(directory) -> dict:
    """The checkpoint's JSON, after checking both files are present and readable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DraftCheckpointError(f"draft checkpoint directory '{directory}' does not exist")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise DraftCheckpointError(f"{directory}: missing {name} (a draft checkpoint has {CONFIG} and {WEIGHTS}; "
                                       "a directory of drafts has one sub-directory per kind: mamba/, llama/)")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DraftCheckpointError(f"{directory / CONFIG} is corrupted (not valid JSON): {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DraftCheckpointError(f"{directory / CONFIG} is not a draft checkpoint config "
                                   f"(expected format '{FORMAT}')")
    if config.get("format_version") != FORMAT_VERSION:
        raise DraftCheckpointError(f"{directory / CONFIG}: format_version {config.get('format_version')!r} is not "
                                   f"supported (expected {FORMAT_VERSION})")
    missing = [key for key in ("kind", "verifier", "hidden_size", "context", "core") if key not in config]
    if missing:
        raise DraftCheckpointError(f"{directory / CONFIG} lacks {missing}")
    if config["kind"] not in HEAD_KINDS:
        raise DraftCheckpointError(f"{directory / CONFIG}: kind '{config['kind']}' is unknown (expected {HEAD_KINDS})")
    try:
        with safe_open(directory / WEIGHTS, framework="pt") as weights:
            if not list(weights.keys()):
                raise DraftCheckpointError(f"{directory / WEIGHTS} holds no tensors")
    except (SafetensorError, OSError) as error:
        raise DraftCheckpointError(f"{directory / WEIGHTS} is corrupted (not a readable safetensors file): "
                                   f"{error}") from None
    return config


def check_compatible(config: dict, directory, kind: str, verifier_name: str, hidden_size: int | None) -> None:
    """The checkpoint must be a `kind` head trained for this verifier (name and hidden size)."""
    if config["kind"] != kind:
        raise DraftCheckpointError(f"{directory} is a '{config['kind']}' draft, not a '{kind}' draft")
    if hidden_size is not None and config["hidden_size"] != hidden_size:
        raise DraftCheckpointError(f"{directory} was trained for a verifier of hidden size {config['hidden_size']} "
                                   f"('{config['verifier']}'), but this verifier's hidden size is {hidden_size}")
    if config["verifier"] != verifier_name:
        raise DraftCheckpointError(f"{directory} was trained for verifier '{config['verifier']}', not for "
                                   f"'{verifier_name}'; train a draft for it with spec-vla-collect and "
                                   "spec-vla-train-draft")


def load_head(directory, device="cpu", dtype: torch.dtype = torch.float32) -> tuple[EagleHead, dict]:
    """Check the checkpoint (read_draft_config), then build its head: (head, config)."""
    config = read_draft_config(directory)
    return build_head(directory, config, device, dtype), config


def build_head(directory, config: dict, device="cpu", dtype: torch.dtype = torch.float32) -> EagleHead:
    """The head described by `config` (as read_draft_config returned it for `directory`), its
    weights loaded strictly; DraftCheckpointError if the weights do not match the config."""
    directory = Path(directory)
    head = EagleHead(config["kind"], config["core"], config["context"], config.get("carry", False))
    with safe_open(directory / WEIGHTS, framework="pt") as weights:
        state_dict = {key: weights.get_tensor(key) for key in weights.keys()}
    expected = head.state_dict()
    problems = sorted(set(expected) ^ set(state_dict))
    problems += [key for key in set(expected) & set(state_dict) if expected[key].shape != state_dict[key].shape]
    if problems:
        raise DraftCheckpointError(f"{directory / WEIGHTS} does not match its {CONFIG} "
                                   f"(missing, unexpected or mis-shaped: {problems[:8]})")
    head.load_state_dict(state_dict)
    return head.to_runtime(device, dtype).eval()
