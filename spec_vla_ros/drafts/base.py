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

Trees (drafts/tree.py): the decoder asks `propose_tree(next_token, shape)` and
`propose_early_tree(shape)`. By default they are the chains of `propose` (shape.depth tokens) and
`propose_early`, labelled with the draft's `source` (`early_source` for the early guesses);
drafts that branch override them. `accept` then gets the accepted path's tokens and hidden states,
as after a chain. A chain shape must give the chain of `propose` itself.
"""
from __future__ import annotations

import torch

from ..vla.constants import ACTION_DIM
from .tree import MODEL, DraftTree, TreeShape


class Draft:
    name = "base"
    source = MODEL              # the source its proposals are labelled with (drafts/tree.py)
    early_source = MODEL        # ... and its guesses before the prefill
    # The action-token datastore (drafts/retrieval.ActionDatastore) a hybrid tree retrieves from:
    # set by the registry where one belongs to the draft's checkpoint or to the verifier; None:
    # a hybrid tree retrieves from its episode's own actions only.
    datastore = None

    def reset_episode(self) -> None:
        pass

    def propose_early(self, k: int) -> list[int]:
        return []

    def begin(self, hidden: torch.Tensor, input_embeds: torch.Tensor) -> None:
        pass

    def propose(self, next_token: int, k: int) -> list[int]:
        raise NotImplementedError

    def propose_tree(self, next_token: int, shape: TreeShape) -> DraftTree:
        """Candidate continuations after `next_token` within `shape`; must not change the committed
        state (as `propose`). Default: the chain of `propose(next_token, shape.depth)`."""
        return DraftTree.chain(self.propose(next_token, shape.depth), self.source)

    def propose_early_tree(self, shape: TreeShape) -> DraftTree:
        """Guesses before the prefill, the action's first token first (depth up to ACTION_DIM).
        Default: the chain of `propose_early(ACTION_DIM)`."""
        return DraftTree.chain(self.propose_early(ACTION_DIM)[:ACTION_DIM], self.early_source)

    def accept(self, tokens: list[int], hidden: torch.Tensor) -> None:
        pass

    def end_action(self, tokens: list[int]) -> None:
        pass
