"""DecoderSpec: one decoding configuration, and its one text syntax.

A spec names the draft kind (drafts/registry.py's table: `ar` = no draft, `mamba`, `llama`,
`history`), the draft checkpoint ('' = the packaged one), `num_draft_tokens` and the acceptance
rule with its threshold. Every command and the policy build their decoders from specs.

Syntax (`spec-vla-eval --configurations`, results files' labels): `KIND[:RULE[:THRESHOLD]]`,
e.g. `ar`, `mamba`, `mamba:relaxed:9`, `llama:relaxed-guarded` (RULE: `strict`, `relaxed` =
Spec-VLA's exact rule, `relaxed-guarded`; THRESHOLD defaults to Spec-VLA's 9). `parse` reads it,
`DecoderSpec.name` writes it: `DecoderSpec.parse(spec.name)` gives the spec back (checkpoint and
num_draft_tokens are not part of the text). Autoregressive decoding is spelled `ar`; the old
spelling `none` is refused with a line saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..drafts.kinds import AR, check_kind
from ..vla.constants import ACTION_DIM
from .acceptance import DEFAULT_RELAXED_THRESHOLD, GUARDED_RULE, RELAXED_RULE, STRICT, Acceptance

if TYPE_CHECKING:
    from ..drafts.registry import ResolvedDraft

DEFAULT_NUM_DRAFT_TOKENS = 4


def check_num_draft_tokens(value, label: str = "num_draft_tokens") -> None:
    """ValueError unless `value` is an int (not a bool) in 1..ACTION_DIM; `label` names it in the message."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ACTION_DIM:
        raise ValueError(f"{label} {value!r}: expected an integer in 1..{ACTION_DIM}")


def acceptance_from_parameters(rule: str, threshold: int) -> Acceptance:
    """The policy's two parameters (`acceptance`, `relaxed_threshold`) -> Acceptance. The threshold
    is checked even for `strict`, so a later switch to a relaxed rule cannot fail on it."""
    Acceptance(threshold)                      # ValueError for a negative or non-integer threshold
    return Acceptance.from_name(rule, threshold)


def parse_acceptance(text: str) -> Acceptance:
    """`strict`, `relaxed[:T]` (Spec-VLA's exact rule) or `relaxed-guarded[:T]`; T defaults to
    Spec-VLA's threshold (9). ValueError naming what was wrong and what is expected."""
    rule, _, threshold = text.strip().lower().partition(":")
    if not threshold:
        return Acceptance.from_name(rule, DEFAULT_RELAXED_THRESHOLD)
    if rule not in (RELAXED_RULE, GUARDED_RULE):
        raise ValueError(f"acceptance '{text}': only {RELAXED_RULE} and {GUARDED_RULE} take a threshold")
    if not threshold.isdigit():
        raise ValueError(f"acceptance '{text}': the {rule} threshold must be an integer >= 0")
    return Acceptance.from_name(rule, int(threshold))


@dataclass(frozen=True)
class DecoderSpec:
    """One decoding configuration. Raises ValueError (one line) for an unknown or retired draft
    kind or num_draft_tokens outside 1..ACTION_DIM.

    draft: a kind of drafts.registry.DRAFT_KINDS. draft_checkpoint: a directory, '' = packaged.
    acceptance: ignored by `ar` (whose decoder verifies nothing), but kept as given so that a
    policy's acceptance parameter survives a switch to `ar` and back.
    """
    draft: str = AR
    draft_checkpoint: str = ""
    num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS
    acceptance: Acceptance = STRICT

    def __post_init__(self):
        check_kind(self.draft)
        check_num_draft_tokens(self.num_draft_tokens)
        if not isinstance(self.acceptance, Acceptance):
            raise ValueError(f"acceptance {self.acceptance!r}: expected an Acceptance (see parse_acceptance)")

    @property
    def speculative(self) -> bool:
        return self.draft != AR

    @property
    def name(self) -> str:
        """`ar`, `KIND` (strict) or `KIND:RULE:THRESHOLD`: the inverse of `parse`."""
        if not self.speculative or self.acceptance == STRICT:
            return self.draft
        return f"{self.draft}:{self.acceptance.name}"

    @classmethod
    def parse(cls, text: str, checkpoints: Mapping[str, str] | None = None,
              num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS) -> "DecoderSpec":
        """`KIND[:RULE[:THRESHOLD]]` -> DecoderSpec; the draft checkpoint is `checkpoints[KIND]`
        ('' when absent). ValueError `configuration 'TEXT': <what is wrong; what is expected>`."""
        kind, _, rule = text.strip().lower().partition(":")
        try:
            check_kind(kind)
            if kind == AR and rule:
                raise ValueError(f"'{AR}' has no acceptance rule")
            acceptance = parse_acceptance(rule) if rule else STRICT
            return cls(kind, (checkpoints or {}).get(kind, ""), num_draft_tokens, acceptance)
        except ValueError as error:
            raise ValueError(f"configuration '{text}': {error}") from None

    def resolve(self, verifier: str, hidden_size: int | None = None) -> ResolvedDraft:
        """The draft's cheap checks (drafts.registry.resolve) against `verifier`."""
        from ..drafts.registry import resolve      # the model stack: only where a draft is checked
        return resolve(self.draft, self.draft_checkpoint, verifier, hidden_size)
