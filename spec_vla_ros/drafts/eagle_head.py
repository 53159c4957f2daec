"""The EAGLE-style draft head shared by the mamba and llama drafts, and the Draft that drives it.

At position t the head reads `fc(concat(verifier hidden_t, embed(token_{t+1})))` (over the
prompt, the verifier's own input embeddings, which are projected patches at image positions),
runs a sequence core (Mamba blocks or one Llama layer) and predicts hidden_{t+1}; the verifier's
frozen lm_head turns that into the next token. The verifier's embedding and lm_head are used
by reference, never copied into the draft or its checkpoint.

Drafting (EAGLE): the first drafted step pairs the verifier's true pending hidden state with the
verifier's token; later steps feed the head's own predictions. After verification the draft
rolls back to the state after that first step (exact: same inputs as the verifier's) and
re-reads the accepted positions with the verifier's true hidden states.

Carried state (a head trained with `spec-vla-train-draft --carry`): the state at the end of
an action (prompt window and a0..a5 read, the verifier's last hidden state pending) is kept
into the next control step. Before the next prefill the head drafts the next action from it,
one token per step on its own predicted hidden states, each step reading the *previous
action's* token at that position (its best single clue: actions change slowly) and predicting
the new one. A learned `copy_bias` is added to that previous token's logit (a pointer to the
history draft's free guess), so the head only overrides the previous token when its own
prediction is confident. The prefill verifies those 7 guesses (`propose_early`). A Mamba core
carries this in a fixed-size state; a Llama core would carry one step of KV cache.

Trees (EAGLE-2's dynamic tree, `propose_tree` with a TreeShape of top_k > 1): the first step
(pending hidden state, verifier's token) gives the top_k first proposals; each further level
expands the top_k candidates of the level before by cumulative log-probability over the 256 action
tokens, each with its top_k children, in one batched head step (the Mamba core keeps one state per
branch, the Llama core appends the level to its cache under a tree mask); finally the `nodes`
candidates of highest cumulative log-probability over all levels form the tree (a child never
scores above its parent, so they always include their ancestors). Rollback and `accept` work as
after a chain: the first step is shared by every branch.

Those 7 head steps cost about as much as the rest of an action's drafting. Where a head learned
no more than copying (its checkpoint's validation record: the early guesses' chain accuracy summed
over the 7 positions no higher than the previous action's; `early_guess_mode`), the draft proposes
the previous action's tokens instead, without the steps (`EARLY_COPY`). The packaged Mamba head is
such a head (its record and what copying measured: drafts/checkpoints/README.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig

from ..vla.compiled_passes import compile_for
from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN
from ..vla.model import OpenVLA
from ..vla.session import KV_CACHES
from .base import Draft
from .llama import LlamaCore, layer_config
from .mamba import MAMBA_D_STATE, MAMBA_EXPAND, MambaConfig, MambaCore
from .tree import HISTORY, MODEL, DraftTree, TreeShape

HEAD_KINDS = ("mamba", "llama")
EARLY_FROM_HEAD = "head"    # a carrying head's early guesses: drafted on its carried state
EARLY_COPY = "copy"         # ... or the previous action's tokens (no head steps)
EARLY_GUESS_MODES = (EARLY_FROM_HEAD, EARLY_COPY)
ACTION_BINS = ACTION_TOKEN_MAX - ACTION_TOKEN_MIN + 1      # = drafts.tree.ACTION_BINS
DEFAULT_CONTEXT = 16        # prompt positions a head reads (spec-vla-train-draft and spec-vla-collect --context)


def core_config(kind: str, text_config: LlamaConfig, num_layers: int = 1, d_state: int = MAMBA_D_STATE,
                expand: int = MAMBA_EXPAND) -> dict:
    """Core hyperparameters from the verifier's text-model config (d_model / layer shapes = the
    verifier's): all a head needs of the verifier's architecture, so no model is built for it.
    `num_layers`, `d_state`, `expand`: the Mamba core's (ignored for llama)."""
    if kind == "mamba":
        return MambaConfig(d_model=text_config.hidden_size, num_layers=num_layers, d_state=d_state,
                           expand=expand).to_dict()
    if kind == "llama":
        return layer_config(text_config)
    raise ValueError(f"draft head kind '{kind}' is unknown; expected one of {HEAD_KINDS}")


def default_core_config(kind: str, verifier: OpenVLA, num_layers: int = 1) -> dict:
    """core_config for a built verifier."""
    return core_config(kind, verifier.language_model.config, num_layers)


class EagleHead(nn.Module):
    """`context`: how many prompt positions (the last ones) the head reads; None = all of them.
    The verifier's hidden states at the text positions already attend to the image, and a short
    window makes both training and the per-action `begin` several times cheaper."""

    def __init__(self, kind: str, core_config: dict, context: int | None = None, carry: bool = False):
        """`carry`: trained to guess the next control step's action from this one (see the module doc)."""
        super().__init__()
        if context is not None and context < 1:
            raise ValueError(f"context must be None (whole prompt) or >= 1 prompt positions, got {context}")
        self.context, self.carry = context, carry
        if kind == "mamba":
            self.core = MambaCore(MambaConfig(**core_config))
            hidden_size = core_config["d_model"]
        elif kind == "llama":
            self.core = LlamaCore(core_config)
            hidden_size = core_config["hidden_size"]
        else:
            raise ValueError(f"draft head kind '{kind}' is unknown; expected one of {HEAD_KINDS}")
        self.kind, self.core_config, self.hidden_size = kind, dict(core_config), hidden_size
        self.fc = nn.Linear(2 * hidden_size, hidden_size)
        self.norm = nn.RMSNorm(hidden_size, eps=1e-6)    # targets are post-norm hidden states
        if carry:
            self.copy_bias = nn.Parameter(torch.zeros(()))

    def prompt_start(self, prompt_length: int) -> int:
        """First prompt position the head reads (pairs run from there to prompt_length - 2)."""
        return 0 if self.context is None else max(0, prompt_length - 1 - self.context)

    def to_runtime(self, device, dtype: torch.dtype) -> "EagleHead":
        """Move to `device` in `dtype`, keeping the parameters a core wants in fp32 (Mamba's A_log, D)."""
        self.to(device=device, dtype=dtype)
        for module in self.modules():
            for name in getattr(module, "fp32_parameters", ()):
                getattr(module, name).data = getattr(module, name).data.float()
        return self

    def copy_bonus(self, previous_tokens: torch.Tensor) -> torch.Tensor:
        """[..., 256] logit bonus for the previous action's token at each early position."""
        index = previous_tokens - ACTION_TOKEN_MIN
        is_action = (index >= 0) & (index < ACTION_BINS)
        one_hot = F.one_hot(index.clamp(0, ACTION_BINS - 1), ACTION_BINS).to(self.copy_bias.dtype)
        return one_hot * (self.copy_bias * is_action)[..., None]

    def forward(self, hidden: torch.Tensor, next_embeds: torch.Tensor, state=None):
        """hidden_t and embed(token_{t+1}), [b, l, H] each -> predicted hidden_{t+1} [b, l, H], core state."""
        x = self.fc(torch.cat([hidden, next_embeds], dim=-1).to(self.fc.weight.dtype))
        out, state = self.core(x, state)
        return self.norm(out), state

    def token_input(self, next_embeds: torch.Tensor) -> torch.Tensor:
        """[n, H] embeddings -> their share of `fc` (with its bias): fc(cat(h, e)) = W_h h + (W_e e + b),
        so a draft computes the second term once per token id."""
        return F.linear(next_embeds.to(self.fc.weight.dtype), self.fc.weight[:, self.hidden_size:], self.fc.bias)

    def core_inputs(self, hidden: torch.Tensor, token_inputs: torch.Tensor) -> torch.Tensor:
        """fc(cat(hidden_t, embed(token_{t+1}))), [n, H], from hidden rows and their tokens' `token_input`."""
        return F.linear(hidden.to(self.fc.weight.dtype), self.fc.weight[:, :self.hidden_size]) + token_inputs

    def step(self, hidden: torch.Tensor, token_input: torch.Tensor, state):
        """One position from a state: hidden_t [1, H] and `token_input` of token_{t+1} [1, H] ->
        predicted hidden_{t+1} [1, H], core state. `forward` for one token with fewer calls."""
        out, state = self.core.step_rows(self.core_inputs(hidden, token_input), state)
        return F.rms_norm(out, self.norm.weight.shape, self.norm.weight, self.norm.eps), state

    def step_branches(self, hidden: torch.Tensor, token_inputs: torch.Tensor, branches, rows: list[int]):
        """One level of a draft tree: `step` for n positions at once, row i continuing branch
        `rows[i]` of the level before (the cores' `step_branches`)."""
        out, branches = self.core.step_branches(self.core_inputs(hidden, token_inputs), branches, rows)
        return F.rms_norm(out, self.norm.weight.shape, self.norm.weight, self.norm.eps), branches


def early_guess_mode(config: dict) -> str:
    """How a draft checkpoint's carrying head makes its early guesses: EARLY_COPY when its training
    record's validation says its own guesses are worth no more than copying the previous action
    (`val_early_chain_accuracy` summed over the 7 positions, the expected tokens the prefill keeps,
    <= `val_history_early_accuracy`'s), else EARLY_FROM_HEAD (also without a record)."""
    training = config.get("training") or {}
    own, copied = training.get("val_early_chain_accuracy"), training.get("val_history_early_accuracy")
    if config.get("carry") and own and copied and sum(own) <= sum(copied):
        return EARLY_COPY
    return EARLY_FROM_HEAD


def best_candidates(tokens: list[int], parents: list[int], scores: torch.Tensor, nodes: int) -> DraftTree:
    """EAGLE-2's global re-ranking: the `nodes` candidates of highest cumulative log-probability
    (ties: the earlier candidate, so a parent precedes its equally scored child), as a tree ordered
    by depth, then score. Candidates are parents first with scores never above their parent's."""
    ranked = torch.sort(-scores, stable=True).indices[:nodes].tolist()
    rank = {index: place for place, index in enumerate(ranked)}
    depth = []
    for parent in parents:
        depth.append(0 if parent < 0 else depth[parent] + 1)
    order = sorted(ranked, key=lambda index: (depth[index], rank[index]))
    position = {index: new for new, index in enumerate(order)}
    return DraftTree([tokens[i] for i in order], [position[parents[i]] if parents[i] >= 0 else -1 for i in order],
                     [MODEL] * len(order))


def action_logits(predicted: torch.Tensor, action_rows: torch.Tensor) -> torch.Tensor:
    """Logits over the 256 action tokens only: OpenVLA answers with action tokens."""
    return predicted @ action_rows.T


def verifier_action_rows(model: OpenVLA) -> torch.Tensor:
    return model.language_model.lm_head.weight[ACTION_TOKEN_MIN:ACTION_TOKEN_MAX + 1].detach()


class EagleDraft(Draft):
    """A Draft over an EagleHead; the state lives here, so drafts may share one head.
    `early_guesses` (a carrying head's): EARLY_FROM_HEAD or EARLY_COPY (see the module doc)."""

    def __init__(self, head: EagleHead, model: OpenVLA, early_guesses: str = EARLY_FROM_HEAD,
                 temperature: float = 1.0):
        if early_guesses not in EARLY_GUESS_MODES:
            raise ValueError(f"early_guesses '{early_guesses}' is unknown; expected one of {EARLY_GUESS_MODES}")
        self.early_guesses = early_guesses
        self.temperature = temperature
        self.name = head.kind
        self.head = head.eval()
        self.dtype = head.fc.weight.dtype
        self.embedding = model.language_model.get_input_embeddings()
        self.action_rows = verifier_action_rows(model).to(self.dtype)
        self.state = None
        self.pending: torch.Tensor | None = None     # [1, H] the verifier's hidden state at the pending position
        self.snapshots: list = []                    # core states after 0, 1, ... drafted steps
        self.drafted_after: int | None = None        # the next_token the last proposals followed
        self.action_tokens_read = 0                  # action tokens in the committed state (a6 is never read)
        self.carried = None                          # (state, pending hidden, tokens) of the last action
        self.token_inputs: dict[int, torch.Tensor] = {}   # token id -> head.token_input of its embedding
        self.action_token_inputs: torch.Tensor | None = None   # [256, H] head.token_input of every action token
        self.configure()                             # kv_cache, static_cache, step, steps_compiled

    def configure(self, kv_cache: str = "dynamic", compiled: bool = False, proposal_rows: int = ACTION_DIM) -> bool:
        """How the head runs beside a decoder's verifier (Decoder sets it to the verifier's): a Llama
        core's cache, "dynamic" (a DynamicCache per action) or "static" (one StaticLlamaCache per
        draft, reused by every action, allocated with room for `proposal_rows`, the most positions
        one proposal appends: TreeShape.head_rows); and its one-token steps compiled (`compile_for`:
        CUDA graphs on CUDA, traced on the CPU) or eager; a compiled Llama core runs on the static
        cache, where every step has the same shapes. -> whether the steps are compiled. Takes
        effect at the next `begin`.

        A graph is made for one memory layout of its inputs, and a Mamba state that `absorb` made
        over n positions is a slice whose strides depend on n, so the inputs go in contiguous. A CUDA
        graph's outputs are overwritten by its next replay, and every Mamba step's state is kept as a
        snapshot, so the outputs are copied (a Llama step writes into its cache in place and returns it)."""
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
        llama = self.head.kind == "llama"
        self.kv_cache = "static" if llama and (compiled or kv_cache == "static") else "dynamic"
        self.static_cache, self.proposal_rows = None, proposal_rows
        self.step, self.steps_compiled = self.head.step, compiled
        if compiled:
            step, _ = compile_for(self.head.step, self.action_rows.device)

            def compiled_step(hidden, token_input, state):
                if not llama:
                    state = tuple(tuple(tensor.contiguous() for tensor in layer) for layer in state)
                out, state = step(hidden.contiguous(), token_input.contiguous(), state)
                if not llama:
                    state = tuple(tuple(tensor.clone() for tensor in layer) for layer in state)
                return out.clone(), state
            self.step = compiled_step
        return self.steps_compiled

    @property
    def early_source(self) -> str:
        """Copied early guesses are the previous action's tokens (history); drafted ones the head's."""
        return HISTORY if self.early_guesses == EARLY_COPY else MODEL

    def reset_episode(self) -> None:
        self.carried = None

    @torch.inference_mode()
    def propose_early(self, k: int) -> list[int]:
        """A carrying head's guess of the whole action, from the last action's state (used once)."""
        if self.carried is None:
            return []
        (state, hidden, previous), self.carried = self.carried, None
        if self.early_guesses == EARLY_COPY:
            return list(previous[:k])
        proposals = []
        self._reserve(state, k)
        bonuses = self.head.copy_bonus(torch.tensor(previous[:k], device=hidden.device))
        for token, bonus in zip(previous[:k], bonuses):
            hidden, state = self.step(hidden, self._token_input(token), state)
            proposals.append(ACTION_TOKEN_MIN + int((action_logits(hidden[0], self.action_rows) + bonus).argmax()))
        return proposals

    def _empty_state(self, positions: int):
        """None (the core starts a state of its own), or this draft's StaticLlamaCache emptied,
        allocated at the first action with room for the prompt window's `positions`, the action's
        tokens it reads, and the largest proposal after them (or the next action's early guesses)."""
        if self.kv_cache != "static":
            return None
        if self.static_cache is None:
            room = positions + ACTION_DIM - 1 + max(self.proposal_rows, ACTION_DIM)
            self.static_cache = self.head.core.static_cache(room, self.dtype, self.action_rows.device)
        return self.static_cache.clear()

    def _reserve(self, state, steps: int) -> None:
        """Room in a static cache for `steps` one-token steps (a compiled step cannot grow it)."""
        if self.kv_cache == "static":
            state.reserve(steps)

    def _embed(self, tokens: list[int]) -> torch.Tensor:
        return self.embedding(torch.tensor([tokens], device=self.action_rows.device)).to(self.dtype)

    def _token_input(self, token: int) -> torch.Tensor:
        """The head's fc share of token's embedding, [1, H], computed once per token id (a few hundred)."""
        row = self.token_inputs.get(token)
        if row is None:
            row = self.token_inputs[token] = self.head.token_input(self._embed([token])[0])
        return row

    @torch.inference_mode()
    def begin(self, hidden: torch.Tensor, input_embeds: torch.Tensor) -> None:
        start, head = self.head.prompt_start(hidden.shape[0]), self.head
        inputs = head.fc(torch.cat([hidden[start:-1], input_embeds[start + 1:]], dim=-1).to(self.dtype))
        self.state = head.core.absorb(inputs, self._empty_state(inputs.shape[0]))   # outputs never read
        self.pending = hidden[-1:].to(self.dtype)
        self.snapshots, self.action_tokens_read = [], 0

    @torch.inference_mode()
    def propose(self, next_token: int, k: int) -> list[int]:
        core = self.head.core
        self._rollback(0)
        self.snapshots, self.drafted_after = [core.snapshot(self.state)], next_token
        hidden, token, state, proposals = self.pending, next_token, self.state, []
        self._reserve(state, k)
        for _ in range(k):
            hidden, state = self.step(hidden, self._token_input(token), state)
            self.snapshots.append(core.snapshot(state))
            token = ACTION_TOKEN_MIN + int(action_logits(hidden[0], self.action_rows).argmax())
            proposals.append(token)
        self.state = state
        return proposals

    @torch.inference_mode()
    def propose_tree(self, next_token: int, shape: TreeShape) -> DraftTree:
        """EAGLE-2's dynamic tree after `next_token` (see the module doc); a chain shape is `propose`."""
        if shape.is_chain:
            return DraftTree.chain(self.propose(next_token, shape.depth), MODEL)
        tokens, parents, scores = self.tree_candidates(next_token, shape.depth, shape.top_k)
        return best_candidates(tokens, parents, scores, shape.nodes)

    @torch.inference_mode()
    def tree_candidates(self, next_token: int, depth: int, top_k: int) -> tuple[list, list, torch.Tensor]:
        """Every candidate of EAGLE-2's expansion, parents first: (action tokens, parent indices (-1:
        a first proposal), cumulative log-probabilities [n]). Leaves the draft as `propose` does."""
        core, head = self.head.core, self.head
        self._rollback(0)
        self.snapshots, self.drafted_after = [core.snapshot(self.state)], next_token
        self._reserve(self.state, 1)
        hidden, state = self.step(self.pending, self._token_input(next_token), self.state)
        self.snapshots.append(core.snapshot(state))
        self.state = state                            # rollback restores a snapshot of it
        table = self._action_token_inputs()
        log_probs = self._log_probs(hidden)                                                     # [1, 256]
        scores, bins = log_probs.topk(top_k, dim=-1)                                           # [1, k]
        all_bins, all_parents, all_scores = [bins[0]], [[-1] * bins.shape[1]], [scores[0]]
        level = list(range(bins.shape[1]))            # candidates of the newest level (indices into the lists)
        level_rows = [0] * len(level)                 # ... and the row of their parent's output
        branches, level_bins, level_scores, count = core.begin_branches(state), bins[0], scores[0], len(level)
        for _ in range(depth - 1):
            expand = level_scores.topk(min(top_k, len(level))).indices.tolist()
            hidden, branches = head.step_branches(hidden[[level_rows[i] for i in expand]], table[level_bins[expand]],
                                                  branches, [level_rows[i] for i in expand])
            log_probs = self._log_probs(hidden)                                                 # [e, 256]
            scores, bins = log_probs.topk(top_k, dim=-1)
            scores = scores + level_scores[expand][:, None]
            parents = [level[i] for i in expand for _ in range(top_k)]
            level_rows = [row for row in range(len(expand)) for _ in range(top_k)]
            level_bins, level_scores = bins.reshape(-1), scores.reshape(-1)
            level = list(range(count, count + len(parents)))
            count += len(parents)
            all_bins.append(level_bins)
            all_parents.append(parents)
            all_scores.append(level_scores)
        tokens = (torch.cat(all_bins) + ACTION_TOKEN_MIN).tolist()
        return tokens, [parent for level in all_parents for parent in level], torch.cat(all_scores)

    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, H] predicted hidden states -> [n, 256] log-probabilities of the action tokens, at the
        head's calibrated temperature."""
        return F.log_softmax(action_logits(hidden, self.action_rows).float() / self.temperature, dim=-1)

    def _action_token_inputs(self) -> torch.Tensor:
        """[256, H] the head's fc share of every action token's embedding, computed once."""
        if self.action_token_inputs is None:
            tokens = list(range(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1))
            self.action_token_inputs = self.head.token_input(self._embed(tokens)[0])
        return self.action_token_inputs

    @torch.inference_mode()
    def accept(self, tokens: list[int], hidden: torch.Tensor) -> None:
        # Only a0..a5 are ever read (a6 is the last token: nothing is drafted after it), so the
        # state ends every action alike, however many tokens the last pass accepted.
        readable = ACTION_DIM - 1 - self.action_tokens_read
        tokens, hidden = tokens[:readable], hidden[:readable]
        reuse_first = bool(tokens) and len(self.snapshots) > 1 and tokens[0] == self.drafted_after
        self._rollback(1 if reuse_first else 0)
        if not tokens:
            return
        hidden = hidden.to(self.dtype)
        start = int(reuse_first)
        if start < len(tokens):                               # position t's hidden, paired with token t+1
            previous = torch.cat([self.pending, hidden[:-1]])[start:]
            inputs = self.head.core_inputs(previous, torch.cat([self._token_input(token) for token in tokens[start:]]))
            self.state = self.head.core.absorb(inputs, self.state)     # their outputs are never read
        self.pending = hidden[-1:]
        self.action_tokens_read += len(tokens)

    @torch.inference_mode()
    def end_action(self, tokens: list[int]) -> None:
        """A carrying head keeps its state, the pending hidden state and the tokens for the next
        action's early proposals."""
        self.carried = None
        if self.head.carry and self.action_tokens_read == ACTION_DIM - 1:
            self._rollback(0)
            self.carried = (self.state, self.pending, list(tokens))

    def _rollback(self, drafted_steps: int) -> None:
        """Back to the state after `drafted_steps` of the last proposals (0: the committed state)."""
        if self.snapshots:
            self.state = self.head.core.restore(self.state, self.snapshots[drafted_steps])
            self.snapshots = []
