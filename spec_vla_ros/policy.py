"""VLAPolicy: (image, instruction) -> 7-DoF action + DecodeStats. No ROS here.

The policy owns a loaded verifier and a Decoder (autoregressive or speculative). Building a
new decoder (e.g. loading another draft) is separate from installing it, so a node can build
off its executor thread and swap at an action boundary while the old decoder keeps serving.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from .decoding.acceptance import RULES, Acceptance
from .decoding.decoder import Decoder
from .decoding.stats import DecodeStats
from .drafts.eagle_head import HEAD_KINDS
from .drafts.registry import DRAFT_NAMES, check_draft_config, draft_checkpoint_dir, load_draft
from .vla.action_tokenizer import EMBEDDED_NORM_STATS, read_norm_stats, select_norm_stats, token_ids_to_actions
from .vla.checkpoint import MINIATURE, check_checkpoint_files, load_verifier, resolve_dtype
from .vla.constants import ACTION_DIM, DEFAULT_UNNORM_KEY
from .vla.preprocess import pixel_values, validate_image
from .vla.prompt import build_prompt, prompt_token_ids


@dataclass(frozen=True)
class PolicyConfig:
    verifier: str = MINIATURE          # "miniature" (embedded default) or an OpenVLA HF directory
    unnorm_key: str = DEFAULT_UNNORM_KEY
    device: str = "cpu"
    dtype: str = "auto"                # the checkpoint's own (fp16 -> fp32 on CPU); miniature: fp32 CPU, bf16 CUDA
    draft: str = "mamba"               # none | mamba | llama | history
    draft_checkpoint: str = ""         # "" = the packaged checkpoint trained for the miniature
    num_draft_tokens: int = 4
    acceptance: str = "strict"         # strict | relaxed (Spec-VLA's exact rule) | relaxed-guarded
    relaxed_threshold: int = 9
    center_crop: bool = True

    def replace(self, **changes) -> "PolicyConfig":
        return replace(self, **changes)


def validate_config(config: PolicyConfig) -> None:
    """Every check that needs no model: the checkpoint's files and its action statistics for
    `unnorm_key`, device and dtype, the acceptance rule, num_draft_tokens, the draft and its
    checkpoint. Raises ValueError with one line naming what is wrong and what is expected; safe
    in a parameter callback and before any load."""
    if config.verifier != MINIATURE:
        check_checkpoint_files(config.verifier)
    select_norm_stats(EMBEDDED_NORM_STATS if config.verifier == MINIATURE else read_norm_stats(config.verifier),
                      config.unnorm_key)
    resolve_dtype(config.dtype, config.device)
    if not (config.device == "cpu" or config.device.startswith("cuda")):
        raise ValueError(f"device '{config.device}' is not supported; expected 'cpu' or 'cuda[:N]'")
    Acceptance(config.relaxed_threshold)       # a negative threshold is invalid even while strict
    if config.acceptance not in RULES:
        raise ValueError(f"acceptance '{config.acceptance}' is unknown; expected one of {', '.join(RULES)}")
    if config.draft not in DRAFT_NAMES:
        raise ValueError(f"draft '{config.draft}' is unknown; expected one of {DRAFT_NAMES}")
    tokens = config.num_draft_tokens           # checked whatever the draft, so a later draft swap cannot fail on it
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= ACTION_DIM:
        raise ValueError(f"num_draft_tokens must be an integer in 1..{ACTION_DIM}, got {tokens!r}")
    if config.draft != "none":
        check_draft_config(config.draft, config.draft_checkpoint, config.verifier)


class VLAPolicy:
    def __init__(self, config: PolicyConfig = PolicyConfig()):
        validate_config(config)
        self.verifier = load_verifier(config.verifier, config.device, config.dtype)
        self.norm_stats = select_norm_stats(self.verifier.norm_stats, config.unnorm_key)
        self._lock = threading.Lock()
        self.config = config
        self.decoder = self.build_decoder(config)
        self._draft_checkpoint = self.draft_checkpoint_of(config)

    validate = staticmethod(validate_config)

    def build_decoder(self, config: PolicyConfig) -> Decoder:
        """Slow (loads a draft checkpoint): call off any latency-sensitive thread, then `set_decoder`."""
        validate_config(config)
        for field in ("verifier", "device", "dtype", "unnorm_key"):
            if getattr(config, field) != getattr(self.config, field):
                raise ValueError(f"'{field}' cannot change on a running policy (restart it with the new value)")
        draft = None if config.draft == "none" else load_draft(config.draft, config.draft_checkpoint, self.verifier)
        return Decoder(self.verifier.model, draft, config.num_draft_tokens,
                       Acceptance.from_name(config.acceptance, config.relaxed_threshold))

    def set_decoder(self, decoder: Decoder, config: PolicyConfig) -> None:
        """Install a decoder; the action in flight (if any) finishes with the old one."""
        checkpoint = self.draft_checkpoint_of(config)
        with self._lock:
            self.decoder, self.config, self._draft_checkpoint = decoder, config, checkpoint

    def draft_checkpoint_of(self, config: PolicyConfig) -> str:
        """The directory `config`'s draft head loads from ('' for none and history)."""
        if config.draft not in HEAD_KINDS:
            return ""
        return str(draft_checkpoint_dir(config.draft, config.draft_checkpoint, self.verifier.name))

    def reset_episode(self) -> None:
        with self._lock:
            self.decoder.reset_episode()

    def act(self, image: np.ndarray, instruction: str) -> tuple[np.ndarray, DecodeStats]:
        """HxWx3 uint8 RGB image + instruction -> de-normalized 7-DoF action (float64) and stats.

        The action is read from the 7 ids `stats.tokens`, as OpenVLA's `predict_action` reads the
        last 7 ids of prompt + output (see Decoder.decode for an early EOS)."""
        tokens, stats = self.decode(image, instruction)
        return self.norm_stats.unnormalize(token_ids_to_actions(tokens)), stats

    def decode(self, image: np.ndarray, instruction: str, decoder: Decoder | None = None) -> tuple[list[int], DecodeStats]:
        """The 7 token ids and stats for an observation, with the installed decoder or `decoder`
        (e.g. a reference decoder run on the same observations); ValueError for a bad image or
        instruction."""
        validate_image(image)
        build_prompt(instruction)
        with self._lock:           # one decoder, and the statistics name the one that ran
            prompt_ids = prompt_token_ids(self.verifier.tokenizer, instruction)
            pixels = pixel_values(image, self.config.center_crop, self.verifier.image_normalization)
            tokens, stats = (decoder or self.decoder).decode(pixels, prompt_ids)
            if decoder is None:
                stats.draft_checkpoint = self._draft_checkpoint
        return tokens, stats
