"""Per-action decode statistics, the unit every benchmark and the decode_stats topic report."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..drafts.tree import SOURCES
from ..vla.constants import EOS_TOKEN_ID


@dataclass
class DecodeStats:
    draft: str                       # "ar" for autoregressive decoding
    acceptance: str                  # "strict", "relaxed:<threshold>" or "relaxed-guarded:<threshold>"
    tokens: list = field(default_factory=list)             # the 7 ids the action is read from (see `generated`)
    verifier_passes: int = 0
    accepted_per_pass: list = field(default_factory=list)  # draft tokens kept from each pass (a tree's accepted depth)
    proposed_per_pass: list = field(default_factory=list)  # draft tokens proposed to each pass (a tree's nodes)
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    total_ms: float = 0.0
    # The verifier's output (1..7 ids). It ends with EOS (2) when the verifier stopped early; the
    # action is then read, as OpenVLA's predict_action does, from the last 7 ids of prompt +
    # output, so `tokens` starts with prompt ids. Empty in statistics recorded before it existed.
    generated: list = field(default_factory=list)
    # The directory the draft head was loaded from ('' for ar and history), as the Decoder was told.
    draft_checkpoint: str = ""
    # What the draft proposed in (drafts/tree.py): 'chain:K' or 'tree:NODES:DEPTH:TOP_K'; '' for ar
    # and in statistics recorded before trees (chains of num_draft_tokens).
    tree_shape: str = ""
    # Per pass, the draft positions the verifier judged on the path it kept: the accepted ones, plus
    # one when a proposal that followed them was rejected. Empty in statistics recorded before
    # trees; for a chain it is what proposed > accepted says.
    judged_per_pass: list = field(default_factory=list)
    # Per pass, the source of the kept path's last node: 'model' (a draft head), 'history' (the
    # previous action) or 'retrieval' (earlier action-token sequences); '' when nothing was kept.
    # Empty in statistics recorded before trees.
    source_per_pass: list = field(default_factory=list)

    @property
    def stopped_at_eos(self) -> bool:
        """The verifier emitted EOS before the 7th action token (or as the 7th)."""
        return bool(self.generated) and self.generated[-1] == EOS_TOKEN_ID

    @property
    def acceptance_length(self) -> float:
        """Tokens produced per verifier pass (Spec-VLA's definition; AR = 1)."""
        produced = len(self.generated) if self.generated else len(self.tokens)
        return produced / self.verifier_passes if self.verifier_passes else 0.0

    def position_outcomes(self) -> list[tuple[int, bool]]:
        """(draft position, accepted) for each proposal the verifier judged on the path it kept
        (for a tree: accept rate by depth).

        Proposals after the first rejection in a pass are not judged and not listed; a proposal
        after a kept EOS counts as not accepted (generation stopped there).
        """
        outcomes = []
        judged = self.judged_per_pass if len(self.judged_per_pass) == len(self.accepted_per_pass) else \
            [accepted + (proposed > accepted) for accepted, proposed in zip(self.accepted_per_pass,
                                                                              self.proposed_per_pass)]
        for accepted, count in zip(self.accepted_per_pass, judged):
            outcomes.extend((position, True) for position in range(accepted))
            if count > accepted:
                outcomes.append((accepted, False))
        return outcomes

    def source_counts(self) -> dict:
        """How many passes kept a path of each source (model, history, retrieval)."""
        counts: dict = {}
        for source in self.source_per_pass:
            if source:
                counts[source] = counts.get(source, 0) + 1
        return counts

    def as_dict(self) -> dict:
        """The fields and the two derived values, as the policy node sends them (decode_report)."""
        return {**asdict(self), "acceptance_length": self.acceptance_length, "stopped_at_eos": self.stopped_at_eos}


def tree_statistics(stats: list[DecodeStats]) -> dict:
    """Over many actions: `accepted_depth`, the mean proposals kept per verifier pass (the kept
    path's depth in a tree), and `kept_<source>` for each source of drafts/tree.SOURCES, the share
    of passes whose kept path ended in a proposal of that source (model, history, retrieval), over
    the actions that record sources (None where none does: statistics recorded before trees)."""
    passes = sum(len(action.accepted_per_pass) for action in stats)
    sourced = [action for action in stats if len(action.source_per_pass) == len(action.accepted_per_pass)]
    sourced_passes = sum(len(action.source_per_pass) for action in sourced)
    kept: dict = {source: 0 for source in SOURCES}
    for action in sourced:
        for source, count in action.source_counts().items():
            kept[source] = kept.get(source, 0) + count
    return {"accepted_depth": sum(map(sum, (action.accepted_per_pass for action in stats))) / passes if passes
            else None,
            **{f"kept_{source}": count / sourced_passes if sourced_passes else None for source, count in kept.items()}}
