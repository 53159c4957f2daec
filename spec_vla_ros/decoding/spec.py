"""DecoderSpec: one decoding configuration, and its one text syntax.

A spec names the draft kind (drafts/registry.py's table: `ar` = no draft, `mamba`, `llama`,
`history`), the draft checkpoint ('' = the packaged one), `num_draft_tokens`, the acceptance
rule with its threshold and the draft's tree shape (drafts/tree.py; None: chains of
num_draft_tokens). Every command and the policy build their decoders from specs.

Syntax (`spec-vla-eval --configurations`, results files' labels): `KIND[:RULE[:THRESHOLD]][@SHAPE]`,
e.g. `ar`, `mamba`, `mamba:relaxed:9`, `llama:relaxed-guarded`, `mamba@tree:50`,
`history:relaxed:9@hybrid:32:6:8` (RULE: `strict`, `relaxed` = Spec-VLA's exact rule,
`relaxed-guarded`; THRESHOLD defaults to Spec-VLA's 9). SHAPE (`parse_tree_shape`, also the text
of the policy's tree parameter): `chain` (num_draft_tokens in a row; `chain:K` sets K),
`tree:NODES[:DEPTH[:TOP_K]]` (a draft's own tree: EAGLE-2's dynamic tree for the heads) or
`hybrid:NODES[:DEPTH[:TOP_K]]` (the draft's branches, the previous action and retrieved
continuations in one tree); DEPTH defaults to DEFAULT_TREE_DEPTH, TOP_K to DEFAULT_TREE_TOP_K.
`parse` reads it, `DecoderSpec.name` writes it: `DecoderSpec.parse(spec.name)` gives the spec back
(checkpoint and num_draft_tokens are not part of the text, except as `@chain:K`). Autoregressive
decoding is spelled `ar`; the old spelling `none` is refused with a line saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from ..drafts.kinds import AR, check_kind
from ..drafts.tree import TreeShape
from ..vla.constants import ACTION_DIM
from .acceptance import DEFAULT_RELAXED_THRESHOLD, GUARDED_RULE, RELAXED_RULE, STRICT, Acceptance

if TYPE_CHECKING:
    from ..drafts.registry import ResolvedDraft

DEFAULT_NUM_DRAFT_TOKENS = 4
DEFAULT_TREE_DEPTH = ACTION_DIM - 1     # every token after the pending one (a pass never needs more)
DEFAULT_TREE_TOP_K = 8                  # Spec-VLA's (EAGLE-2's) children per node and level
CHAIN, TREE, HYBRID = "chain", "tree", "hybrid"
DRAFT_TREE_HELP = (f"what the draft proposes per verifier pass: '' = a chain of num_draft_tokens; "
                   f"{TREE}:NODES[:DEPTH[:TOP_K]] = the draft's own tree (EAGLE-2's dynamic tree for mamba and "
                   f"llama); {HYBRID}:NODES[:DEPTH[:TOP_K]] = model, history and retrieved branches in one tree "
                   f"(e.g. {HYBRID}:50)")


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


def parse_tree_shape(text: str) -> TreeShape | None:
    """`chain` or '' (None: chains of num_draft_tokens), `chain:K`, `tree:NODES[:DEPTH[:TOP_K]]` or
    `hybrid:NODES[:DEPTH[:TOP_K]]` -> TreeShape. ValueError naming what was wrong and what is expected."""
    kind, *numbers = text.strip().lower().split(":")
    expected = (f"expected {CHAIN}, {CHAIN}:K, {TREE}:NODES[:DEPTH[:TOP_K]] or {HYBRID}:NODES[:DEPTH[:TOP_K]] "
                f"(e.g. {TREE}:50:{DEFAULT_TREE_DEPTH}:{DEFAULT_TREE_TOP_K})")
    if kind in ("", CHAIN) and not numbers:
        return None
    if kind not in (CHAIN, TREE, HYBRID) or not numbers or len(numbers) > (1 if kind == CHAIN else 3) or \
            not all(number.isdigit() for number in numbers):
        raise ValueError(f"tree shape '{text}': {expected}")
    values = [int(number) for number in numbers]
    try:
        if kind == CHAIN:
            check_num_draft_tokens(values[0], "chain length")
            return TreeShape.chain(values[0])
        nodes, depth, top_k = values + [DEFAULT_TREE_DEPTH, DEFAULT_TREE_TOP_K][len(values) - 1:]
        return TreeShape(nodes, min(depth, nodes) if len(values) == 1 else depth, top_k, hybrid=kind == HYBRID)
    except ValueError as error:
        raise ValueError(f"tree shape '{text}': {error}") from None


def shapes_to_compare(tree_texts: list[str], chain_lengths: list[int]) -> list[tuple[int, TreeShape | None]]:
    """What benchmarks compare, in order and once each: for `chain`, one (k, None) per chain length
    (num_draft_tokens); for a tree text (parse_tree_shape), (DEFAULT_NUM_DRAFT_TOKENS, its shape),
    the k a DecoderSpec needs but a tree's decoder does not use."""
    made = []
    for text in tree_texts:
        tree = parse_tree_shape(text)
        made += [(k, None) for k in chain_lengths] if tree is None else [(DEFAULT_NUM_DRAFT_TOKENS, tree)]
    return list(dict.fromkeys(made))


def tree_from_parameter(text: str) -> TreeShape | None:
    """The policy's `draft_tree` parameter -> TreeShape, None for chains: '' or `chain` (chains of
    the num_draft_tokens parameter), `tree:NODES[:DEPTH[:TOP_K]]` or `hybrid:NODES[:DEPTH[:TOP_K]]`.
    `chain:K` is refused: a chain's length has one parameter, num_draft_tokens."""
    if not isinstance(text, str):
        raise ValueError(f"draft_tree {text!r}: expected a string such as '' (chains), {TREE}:50 or {HYBRID}:50")
    shape = parse_tree_shape(text)
    if shape is not None and shape.is_chain:
        raise ValueError(f"draft_tree '{text}': a chain's length is the num_draft_tokens parameter; expected '' or "
                         f"{CHAIN} for chains, {TREE}:NODES[:DEPTH[:TOP_K]] or {HYBRID}:NODES[:DEPTH[:TOP_K]]")
    return shape


@dataclass(frozen=True)
class DecoderSpec:
    """One decoding configuration. Raises ValueError (one line) for an unknown or retired draft
    kind or num_draft_tokens outside 1..ACTION_DIM.

    draft: a kind of drafts.registry.DRAFT_KINDS. draft_checkpoint: a directory, '' = packaged.
    acceptance: ignored by `ar` (whose decoder verifies nothing), but kept as given so that a
    policy's acceptance parameter survives a switch to `ar` and back; so is `tree`.
    tree: the draft's tree shape (drafts/tree.py), None for chains of num_draft_tokens (a chain
    shape given here becomes that: num_draft_tokens = its length, tree None).
    """
    draft: str = AR
    draft_checkpoint: str = ""
    num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS
    acceptance: Acceptance = STRICT
    tree: TreeShape | None = None

    def __post_init__(self):
        check_kind(self.draft)
        if self.tree is not None and not isinstance(self.tree, TreeShape):
            raise ValueError(f"tree {self.tree!r}: expected a TreeShape or None (see parse_tree_shape)")
        if self.tree is not None and self.tree.is_chain:
            object.__setattr__(self, "num_draft_tokens", self.tree.depth)
            object.__setattr__(self, "tree", None)
        check_num_draft_tokens(self.num_draft_tokens)
        if not isinstance(self.acceptance, Acceptance):
            raise ValueError(f"acceptance {self.acceptance!r}: expected an Acceptance (see parse_acceptance)")

    @property
    def shape(self) -> TreeShape:
        """What the draft proposes in: the tree, or the chain of num_draft_tokens."""
        return self.tree or TreeShape.chain(self.num_draft_tokens)

    @property
    def speculative(self) -> bool:
        return self.draft != AR

    @property
    def name(self) -> str:
        """`ar`, `KIND` (strict) or `KIND:RULE:THRESHOLD`, then `@SHAPE` for a tree: the inverse of `parse`."""
        if not self.speculative:
            return self.draft
        name = self.draft if self.acceptance == STRICT else f"{self.draft}:{self.acceptance.name}"
        return name if self.tree is None else f"{name}@{self.tree.name}"

    @classmethod
    def parse(cls, text: str, checkpoints: Mapping[str, str] | None = None,
              num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS, tree: TreeShape | None = None) -> "DecoderSpec":
        """`KIND[:RULE[:THRESHOLD]][@SHAPE]` -> DecoderSpec; the draft checkpoint is
        `checkpoints[KIND]` ('' when absent); `tree` applies where the text names no shape.
        ValueError `configuration 'TEXT': <what is wrong; what is expected>`."""
        decoding, at, shape = text.strip().lower().partition("@")
        kind, _, rule = decoding.partition(":")
        try:
            check_kind(kind)
            if kind == AR and (rule or at):
                raise ValueError(f"'{AR}' has no acceptance rule and no tree shape")
            acceptance = parse_acceptance(rule) if rule else STRICT
            if at:
                tree = parse_tree_shape(shape) if shape.strip() else None
                if tree is None:
                    raise ValueError(f"'@' needs a tree shape after it, e.g. @{TREE}:50")
            return cls(kind, (checkpoints or {}).get(kind, ""), num_draft_tokens, acceptance, tree)
        except ValueError as error:
            raise ValueError(f"configuration '{text}': {error}") from None

    def resolve(self, verifier: str, hidden_size: int | None = None) -> ResolvedDraft:
        """The draft's cheap checks (drafts.registry.resolve) against `verifier`."""
        from ..drafts.registry import resolve      # the model stack: only where a draft is checked
        return resolve(self.draft, self.draft_checkpoint, verifier, hidden_size)
