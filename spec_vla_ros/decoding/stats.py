"""Per-action decode statistics, the unit every benchmark and the decode_stats topic report."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class DecodeStats:
    draft: str                       # "none" for autoregressive decoding
    acceptance: str                  # "strict" or "relaxed:<threshold>"
    tokens: list = field(default_factory=list)             # the 7 action token ids produced
    verifier_passes: int = 0
    accepted_per_pass: list = field(default_factory=list)  # draft tokens accepted in each pass
    proposed_per_pass: list = field(default_factory=list)  # draft tokens proposed to each pass
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    total_ms: float = 0.0

    @property
    def acceptance_length(self) -> float:
        """Tokens produced per verifier pass (Spec-VLA's definition; AR = 1)."""
        return len(self.tokens) / self.verifier_passes if self.verifier_passes else 0.0

    def position_outcomes(self) -> list[tuple[int, bool]]:
        """(draft position, accepted) for each proposal the verifier judged.

        Proposals after the first rejection in a pass are not judged and not listed.
        """
        outcomes = []
        for accepted, proposed in zip(self.accepted_per_pass, self.proposed_per_pass):
            outcomes.extend((position, True) for position in range(accepted))
            if proposed > accepted:
                outcomes.append((accepted, False))
        return outcomes

    def as_dict(self) -> dict:
        return {**asdict(self), "acceptance_length": self.acceptance_length}
