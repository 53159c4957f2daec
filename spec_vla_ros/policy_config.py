"""PolicyConfig: the policy's settings, one field per ROS parameter. Light: no model stack here
(torch, transformers), so a node or command checks its settings before it loads one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .decoding.acceptance import DEFAULT_RELAXED_THRESHOLD
from .decoding.spec import DEFAULT_NUM_DRAFT_TOKENS, DecoderSpec, acceptance_from_parameters, tree_from_parameter
from .vla.constants import COMPILE_MODES, DEFAULT_UNNORM_KEY, MINIATURE

RESTART_FIELDS = ("verifier", "unnorm_key", "device", "dtype", "compile")   # cannot change on a running policy


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's settings, one field per ROS parameter; the decoding ones make `spec`."""
    verifier: str = MINIATURE          # "miniature" (embedded default) or an OpenVLA HF directory
    unnorm_key: str = DEFAULT_UNNORM_KEY
    device: str = "cpu"
    dtype: str = "auto"                # the checkpoint's own (fp16 -> fp32 on CPU); miniature: fp32 CPU, bf16 CUDA
    compile: str = "auto"              # COMPILE_MODES: verifier passes compiled (CUDA graphs) on CUDA; always | never
    draft: str = "mamba"               # ar | mamba | llama | history (drafts/registry.py)
    draft_checkpoint: str = ""         # "" = the packaged checkpoint trained for the miniature
    num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS
    draft_tree: str = ""               # "" = chains of num_draft_tokens; tree:NODES[:DEPTH[:TOP_K]] | hybrid:...
    acceptance: str = "strict"         # strict | relaxed (Spec-VLA's exact rule) | relaxed-guarded
    relaxed_threshold: int = DEFAULT_RELAXED_THRESHOLD
    center_crop: bool = True

    def check_compile(self) -> None:
        """ValueError (one line) unless `compile` is one of COMPILE_MODES."""
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile '{self.compile}' is not one of {', '.join(COMPILE_MODES)} (auto: compiled "
                             "verifier passes on CUDA, eager on the CPU)")

    def replace(self, **changes) -> "PolicyConfig":
        return replace(self, **changes)

    @property
    def spec(self) -> DecoderSpec:
        """The decoding fields as a DecoderSpec; ValueError (one line) if one is invalid."""
        acceptance = acceptance_from_parameters(self.acceptance, self.relaxed_threshold)
        return DecoderSpec(self.draft, self.draft_checkpoint, self.num_draft_tokens, acceptance,
                           tree_from_parameter(self.draft_tree))

    def with_spec(self, spec: DecoderSpec) -> "PolicyConfig":
        """This config decoding as `spec` says."""
        return self.replace(draft=spec.draft, draft_checkpoint=spec.draft_checkpoint,
                            num_draft_tokens=spec.num_draft_tokens, draft_tree=spec.tree.name if spec.tree else "",
                            acceptance=spec.acceptance.rule,
                            relaxed_threshold=spec.acceptance.threshold)
