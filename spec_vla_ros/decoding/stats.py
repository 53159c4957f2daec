"""Per-action decode statistics, the unit every benchmark and the decode_stats topic report."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..vla.constants import EOS_TOKEN_ID


@dataclass
class DecodeStats:
    draft: str                       # "ar" for autoregressive decoding
    acceptance: str                  # "strict", "relaxed:<threshold>" or "relaxed-guarded:<threshold>"
    tokens: list = field(default_factory=list)             # the 7 ids the action is read from (see `generated`)
    verifier_passes: int = 0
    accepted_per_pass: list = field(default_factory=list)  # draft tokens kept from each pass
    proposed_per_pass: list = field(default_factory=list)  # draft tokens proposed to each pass
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    total_ms: float = 0.0
    # The verifier's output (1..7 ids). It ends with EOS (2) when the verifier stopped early; the
    # action is then read, as OpenVLA's predict_action does, from the last 7 ids of prompt +
    # output, so `tokens` starts with prompt ids. Empty in statistics recorded before it existed.
    generated: list = field(default_factory=list)
    # The directory the draft head was loaded from ('' for ar and history), as the Decoder was told.
    draft_checkpoint: str = ""

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
        """(draft position, accepted) for each proposal the verifier judged.

        Proposals after the first rejection in a pass are not judged and not listed; a proposal
        after a kept EOS counts as not accepted (generation stopped there).
        """
        outcomes = []
        for accepted, proposed in zip(self.accepted_per_pass, self.proposed_per_pass):
            outcomes.extend((position, True) for position in range(accepted))
            if proposed > accepted:
                outcomes.append((accepted, False))
        return outcomes

    def as_dict(self) -> dict:
        """The fields and the two derived values, as the policy node sends them (decode_report)."""
        return {**asdict(self), "acceptance_length": self.acceptance_length, "stopped_at_eos": self.stopped_at_eos}
