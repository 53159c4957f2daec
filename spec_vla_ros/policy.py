"""VLAPolicy: (image, instruction) -> 7-DoF action + DecodeStats. No ROS here.

The policy owns a loaded verifier and a Decoder (autoregressive or speculative). Building a
new decoder (e.g. loading another draft) is separate from installing it, so a node can build
off its executor thread and swap at an action boundary while the old decoder keeps serving.
"""
from __future__ import annotations

import threading

import numpy as np

from .decoding.decoder import Decoder
from .decoding.stats import DecodeStats
from .drafts.registry import ResolvedDraft, load
from .policy_config import RESTART_FIELDS, PolicyConfig  # noqa: F401 (re-exported: the policy's settings)
from .vla.action_tokenizer import EMBEDDED_NORM_STATS, read_norm_stats, select_norm_stats, token_ids_to_actions
from .vla.checkpoint import check_checkpoint_files, resolve_dtype
from .vla.compiled_passes import compile_on
from .vla.constants import MINIATURE
from .vla.preprocess import pixel_values, validate_image
from .vla.prompt import build_prompt, prompt_token_ids
from .vla.verifiers import load_verifier


WARM_UP_INSTRUCTION = "warm up"      # the observation compiled passes are first run on (a black image)


def check_runtime(config: PolicyConfig) -> None:
    """The verifier's files and its action statistics for `unnorm_key`, device and dtype."""
    if config.verifier != MINIATURE:
        check_checkpoint_files(config.verifier)
    select_norm_stats(EMBEDDED_NORM_STATS if config.verifier == MINIATURE else read_norm_stats(config.verifier),
                      config.unnorm_key)
    resolve_dtype(config.dtype, config.device)
    config.check_compile()
    if not (config.device == "cpu" or config.device.startswith("cuda")):
        raise ValueError(f"device '{config.device}' is not supported; expected 'cpu' or 'cuda[:N]'")


def validate_config(config: PolicyConfig) -> ResolvedDraft:
    """Every check that needs no model: the verifier (check_runtime), the decoding fields
    (PolicyConfig.spec) and the draft's checkpoint (DecoderSpec.resolve). Returns the resolved
    draft, which `VLAPolicy` and `build_decoder` load without checking again. Raises ValueError
    with one line naming what is wrong and what is expected; safe in a parameter callback and
    before any load."""
    check_runtime(config)
    return config.spec.resolve(config.verifier)


def draft_directory(resolved: ResolvedDraft) -> str:
    """The directory a resolved draft's head loads from ('' for ar and history)."""
    return str(resolved.directory) if resolved.directory is not None else ""


class VLAPolicy:
    def __init__(self, config: PolicyConfig = PolicyConfig(), resolved: ResolvedDraft | None = None):
        """Load the verifier and the draft. `resolved`: validate_config(config)'s result, when the
        caller has just run it (it is then not run again). ValueError as validate_config."""
        if resolved is None:
            resolved = validate_config(config)
        self.verifier = load_verifier(config.verifier, config.device, config.dtype)
        self.norm_stats = select_norm_stats(self.verifier.norm_stats, config.unnorm_key)
        self._lock = threading.Lock()
        self.config = config
        self.warm_up_seconds = 0.0          # compiling the verifier's passes (compile: auto on CUDA, on)
        self.compile_error = ""             # why compiling failed (the passes then run eagerly)
        self.decoder = self.build_decoder(config, resolved)

    validate = staticmethod(validate_config)

    def build_decoder(self, config: PolicyConfig, resolved: ResolvedDraft | None = None) -> Decoder:
        """Slow (loads a draft checkpoint): call off any latency-sensitive thread, then `set_decoder`.

        `resolved`: validate_config(config)'s result if the caller has it; otherwise it is run here.
        ValueError for an invalid config, or one that changes a RESTART_FIELDS field."""
        if resolved is None:
            resolved = validate_config(config)
        for field in RESTART_FIELDS:
            if getattr(config, field) != getattr(self.config, field):
                raise ValueError(f"'{field}' cannot change on a running policy (restart it with the new value)")
        spec = config.spec
        if (resolved.kind, resolved.checkpoint) != (spec.draft, spec.draft_checkpoint):
            raise ValueError(f"the resolved draft '{resolved.kind}' ({resolved.checkpoint or 'packaged'}) is not "
                             f"the config's '{spec.draft}' ({spec.draft_checkpoint or 'packaged'})")
        draft = load(resolved, self.verifier)

        def decoder(compiled: bool) -> Decoder:
            return Decoder(self.verifier.model, draft, spec.num_draft_tokens, spec.acceptance,
                           draft_checkpoint=draft_directory(resolved), tree=spec.tree, compiled=compiled)
        if not compile_on(config.compile, config.device):
            return decoder(False)
        compiled = decoder(True)    # compile its pass lengths now, not in an action (shares the model's cache)
        try:
            with self._lock:
                pixels = pixel_values(np.zeros((224, 224, 3), np.uint8), config.center_crop,
                                      self.verifier.image_normalization)
                self.warm_up_seconds += compiled.warm_up(pixels, prompt_token_ids(self.verifier.tokenizer,
                                                                                  WARM_UP_INSTRUCTION))
        except Exception as error:  # torch.compile or graph capture failing on this machine: eager passes
            self.compile_error = f"compiling the verifier's passes failed, running them eagerly: " \
                                 f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            return decoder(False)
        return compiled

    def set_decoder(self, decoder: Decoder, config: PolicyConfig) -> None:
        """Install a decoder; the action in flight (if any) finishes with the old one."""
        with self._lock:
            self.decoder, self.config = decoder, config

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
        return tokens, stats
