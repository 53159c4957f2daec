"""The Draft protocol the speculative decoder drives.

The verifier's cache always ends with a *pending* position: its hidden state is known but the
token that follows it (the verifier's own choice, `next_token`) has not been fed yet. A draft
tracks the same prefix:

- `begin(hidden, input_embeds)`: a new action; the prompt's last-layer hidden states and input
  embeddings from the prefill (position t is paired with the embedding at t + 1, as EAGLE does).
- `propose(next_token, k)`: guess the k tokens after `next_token`; must not change the
  committed state (drafts roll back their own speculative steps).
- `accept(tokens, hidden)`: `tokens` entered the verifier's cache after the pending position
  (next_token, then the accepted proposals) and `hidden` are their true hidden states; the last
  of them becomes the new pending position.
- `propose_early(k)`: optional guesses for the whole action before the prefill (history, or a
  state carried across control steps); verified by the prefill pass itself.
- `end_action(tokens)` / `reset_episode()`: the finished action; a new episode.
"""
from __future__ import annotations

import torch


class Draft:
    name = "base"

    def reset_episode(self) -> None:
        pass

    def propose_early(self, k: int) -> list[int]:
        return []

    def begin(self, hidden: torch.Tensor, input_embeds: torch.Tensor) -> None:
        pass

    def propose(self, next_token: int, k: int) -> list[int]:
        raise NotImplementedError

    def accept(self, tokens: list[int], hidden: torch.Tensor) -> None:
        pass

    def end_action(self, tokens: list[int]) -> None:
        pass
