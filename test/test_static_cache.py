"""The static KV cache (vla/session.py) and compiled passes (vla/compiled_passes.py), issue #26,
against transformers' DynamicCache and eager passes.

The miniature verifier in float32 on fresh random inputs. A static pass attends over the whole
preallocated length with the unused positions masked, so its float32 results move by the same
~1e-5 as a pass of another shape (decoding.acceptance); the invariants are therefore: every pass's
hidden states within SHAPE_NOISE of the dynamic session's; strict decoding with every draft and
tree shape gives AR's tokens except at a near-tie; a relaxed rule gives the dynamic cache's tokens
unless the dynamic run met a near-tie. And the cache itself: allocated once per model, rolled
back by moving its length, lent to one session at a time. Every test that draws prints its seed.
"""
import os

import numpy as np
import pytest
import torch

from spec_vla_ros.decoding.acceptance import STRICT_TIE_TOLERANCE_FP32, Acceptance
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.eagle_head import EagleDraft, action_logits
from spec_vla_ros.drafts.llama import StaticLlamaCache
from spec_vla_ros.drafts.registry import load_draft
from spec_vla_ros.drafts.tree import TreeShape
from spec_vla_ros.policy_config import PolicyConfig
from spec_vla_ros.vla.compiled_passes import (PASS_BUCKETS, bucket_for, compile_on, pad_query_rows, prefill_bucket,
                                              warm_up_prefill_buckets)
from spec_vla_ros.vla.constants import ACTION_TOKEN_MAX, ACTION_TOKEN_MIN
from spec_vla_ros.vla.session import StaticKVCache, VerifierSession, static_kv_cache, tree_attention_mask

SEED = int.from_bytes(os.urandom(4), "little")
SHAPE_NOISE = 1e-4
DRAFT_TIE = 1e-4            # a draft's two best action logits this close may swap between caches
SHAPES = [None, TreeShape(16, 4, 4), TreeShape(16, 4, 4, hybrid=True)]      # None: a chain of k


def fresh(offset: int = 0) -> np.random.Generator:
    return np.random.default_rng(SEED + offset)


def random_tokens(rng, count):
    return rng.integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, count).tolist()


def random_tree(rng, count):
    return [-1 if index == 0 else int(rng.integers(-1, index)) for index in range(count)]


def path_to(node, parents):
    path = []
    while node >= 0:
        path.append(node)
        node = parents[node]
    return path[::-1]


def random_observation(rng):
    pixels = torch.from_numpy(rng.standard_normal((6, 224, 224)).astype(np.float32))
    prompt = [1] + rng.integers(300, 29000, int(rng.integers(8, 20))).tolist() + [29871]
    return pixels, prompt


@pytest.fixture(scope="module")
def trained_drafts(miniature):
    return {name: load_draft(name, "", miniature) for name in ("mamba", "llama", "history")}


@pytest.fixture(scope="module")
def observations(miniature):
    """(pixels, prompt, AR's generated tokens, AR's logits rows) for fresh random observations."""
    rng = fresh(1)
    made = []
    for _ in range(6):
        pixels, prompt = random_observation(rng)
        session = VerifierSession(miniature.model)
        step = session.prefill(pixels, prompt)
        rows, tokens = [step.logits[-1]], [step.greedy()[-1]]
        while len(tokens) < 7 and tokens[-1] != 2:
            step = session.extend(tokens[-1:])
            rows.append(step.logits[-1])
            tokens.append(step.greedy()[-1])
        made.append((pixels, prompt, tokens, torch.stack(rows)))
    return made


def assert_ar_up_to_near_ties(generated, ar_generated, ar_rows, message):
    for position, (mine, theirs) in enumerate(zip(generated, ar_generated)):
        if mine != theirs:
            gap = float(ar_rows[position, theirs] - ar_rows[position, mine])
            assert 0 <= gap <= STRICT_TIE_TOLERANCE_FP32, f"{message}: token {position} is {mine}, AR's {theirs}"
            return
    assert len(generated) == len(ar_generated), message


def assert_same_passes(steps, message):
    for step in steps[1:]:
        torch.testing.assert_close(step.hidden, steps[0].hidden, atol=SHAPE_NOISE, rtol=0,
                                   msg=lambda text: f"{message}: {text}")


def random_passes(sessions, steps, rng, prompt, count, max_tree, message):
    """`count` random extends, tree passes with a kept path, and rollbacks (each followed by one
    token), the same on every session; after each, every session's hidden states are within
    SHAPE_NOISE of the first session's and the lengths equal. `steps`: the prefill's."""
    operations = ["prefill"]
    for _ in range(count):
        assert_same_passes(steps, f"{message}, after {operations}")
        assert len({session.length for session in sessions}) == 1, (message, operations)
        operation = ["extend", "tree", "truncate"][int(rng.integers(0, 3))]
        operations.append(operation)
        if operation == "extend":
            tokens = random_tokens(rng, int(rng.integers(1, 6)))
            steps = [session.extend(tokens) for session in sessions]
        elif operation == "tree":
            size = int(rng.integers(2, max_tree))
            tokens, tree = random_tokens(rng, size), random_tree(rng, size)
            assert_same_passes([session.verify_tree(tokens, tree) for session in sessions], f"{message}, tree pass")
            path = path_to(int(rng.integers(0, size)), tree)
            for session in sessions:
                session.keep_path(path)
            steps = [session.extend(tokens[path[-1]:path[-1] + 1]) for session in sessions]
        else:
            length, token = int(rng.integers(len(prompt), sessions[0].length + 1)), random_tokens(rng, 1)
            for session in sessions:
                session.truncate(length)
            steps = [session.extend(token) for session in sessions]


def test_a_static_session_computes_what_a_dynamic_one_does(miniature):
    """Random sequences of prefills (with early guesses as chains or trees), extends, tree passes
    with a kept path, and rollbacks, side by side on the dynamic cache and the static one, the latter
    attending over the positions written (the CPU's default) and over its whole length (CUDA's)."""
    whole = StaticKVCache(miniature.model, whole_length=True)
    assert not static_kv_cache(miniature.model).whole_length           # the CPU's default
    for trial in range(3):
        rng = fresh(100 + trial)
        pixels, prompt = random_observation(rng)
        sessions = [VerifierSession(miniature.model, "dynamic"), VerifierSession(miniature.model, "static"),
                    VerifierSession(miniature.model, whole)]
        early = random_tokens(rng, int(rng.integers(0, 5)))
        parents = random_tree(rng, len(early)) if early and rng.random() < 0.5 else None
        steps = [session.prefill(pixels, prompt, early, parents) for session in sessions]
        if parents is not None:
            path = path_to(int(rng.integers(0, len(early))), parents)
            for session in sessions:
                session.keep_path(path)
        random_passes(sessions, steps, rng, prompt, 8, 20, f"seed {SEED}, trial {trial}")


def test_the_static_cache_is_allocated_once_per_model_and_rolled_back_by_its_length(miniature):
    rng = fresh(300)
    pixels, prompt = random_observation(rng)
    first = VerifierSession(miniature.model, "static")
    first.prefill(pixels, prompt)
    cache = static_kv_cache(miniature.model)
    assert first.static is cache and cache.owner is first
    keys = cache.cache.layers[0].keys
    address, capacity = keys.data_ptr(), cache.capacity
    assert capacity >= first.length + 7 + StaticKVCache.PASS_RESERVE and capacity % StaticKVCache.GROWTH == 0
    length = first.length
    first.extend(random_tokens(rng, 5))
    first.truncate(length + 2)                                 # a rollback moves the length
    assert first.length == length + 2
    first.verify_tree(random_tokens(rng, 6), [-1, 0, 0, 1, -1, 4])
    first.keep_path([0, 1, 3])
    assert first.length == length + 5
    second = VerifierSession(miniature.model, "static")        # the next action's session reuses it
    second.prefill(pixels, prompt)
    assert second.length == length and cache.cache.layers[0].keys.data_ptr() == address
    assert cache.capacity == capacity, f"seed {SEED}"

    # a pass that does not fit grows the cache once; the prefix's keys and values come along
    dynamic = VerifierSession(miniature.model)
    dynamic.prefill(pixels, prompt)
    count = capacity - length + 3
    tokens, tree = random_tokens(rng, count), random_tree(rng, count)
    wide = [session.verify_tree(tokens, tree) for session in (dynamic, second)]
    assert cache.capacity > capacity and cache.cache.layers[0].keys.data_ptr() != address
    torch.testing.assert_close(wide[1].hidden, wide[0].hidden, atol=SHAPE_NOISE, rtol=0, msg=lambda t: f"seed {SEED}: {t}")


def test_a_session_whose_static_cache_was_claimed_refuses_to_run(miniature):
    pixels, prompt = random_observation(fresh(400))
    old, new = VerifierSession(miniature.model, "static"), VerifierSession(miniature.model, "static")
    old.prefill(pixels, prompt)
    new.prefill(pixels, prompt)
    length = new.length
    for use in (lambda: old.extend([ACTION_TOKEN_MIN]), lambda: old.truncate(3),
                lambda: old.verify_tree([ACTION_TOKEN_MIN], [-1])):
        with pytest.raises(RuntimeError, match="claimed by a newer session"):
            use()
    assert new.length == length                               # the newer session's cache untouched
    new.extend([ACTION_TOKEN_MIN])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name if shape else "chain")
def test_strict_decoding_on_the_static_cache_gives_ar_tokens_except_at_near_ties(miniature, observations,
                                                                               trained_drafts, shape):
    for name, draft in trained_drafts.items():
        decoder = Decoder(miniature.model, draft, 3, Acceptance(0), tree=shape, kv_cache="static")
        for index, (pixels, prompt, ar_generated, ar_rows) in enumerate(observations):
            _, stats = decoder.decode(pixels, prompt)
            assert_ar_up_to_near_ties(stats.generated, ar_generated, ar_rows,
                                      f"seed {SEED}, draft {name}, observation {index}")
    ar = Decoder(miniature.model, kv_cache="static")
    for index, (pixels, prompt, ar_generated, ar_rows) in enumerate(observations):
        assert_ar_up_to_near_ties(ar.decode(pixels, prompt)[1].generated, ar_generated, ar_rows,
                                  f"seed {SEED}, static AR, observation {index}")


class MarginSession(VerifierSession):
    """Keeps every pass's step, to find the logits rows the decoder read and their top-2 margins."""
    steps = []

    def _forward(self, *args, **kwargs):
        step = super()._forward(*args, **kwargs)
        MarginSession.steps.append(step)
        return step


def smallest_read_margin(steps) -> float:
    """The smallest top-2 logit margin among the rows the decoder read (computed lazily on the CPU):
    where it is a near-tie, the other cache may read the other token."""
    return min((step.top2_margins()[row] for step in steps for row in step._greedy), default=float("inf"))


@pytest.mark.parametrize("rule,threshold", [("relaxed", 0), ("relaxed", 9), ("relaxed-guarded", 9)])
def test_relaxed_decoding_on_the_static_cache_gives_the_dynamic_caches_tokens(miniature, observations, rule,
                                                                              threshold):
    """History draft (its proposals depend on tokens only): identical tokens and acceptance, unless
    the dynamic run's verifier met a near-tie."""
    compared = 0
    for shape in (None, TreeShape(8, 3, 2, hybrid=True)):
        decoders = {kv: Decoder(miniature.model, load_draft("history", "", miniature), 3,
                                Acceptance.from_name(rule, threshold), tree=shape,
                                session_factory=lambda kv=kv: MarginSession(miniature.model, kv))
                    for kv in ("dynamic", "static")}
        for index, (pixels, prompt, _, _) in enumerate(observations):      # one episode
            MarginSession.steps.clear()
            dynamic = decoders["dynamic"].decode(pixels, prompt)[1]
            static = decoders["static"].decode(pixels, prompt)[1]
            if smallest_read_margin(MarginSession.steps) <= STRICT_TIE_TOLERANCE_FP32:
                for decoder in decoders.values():         # the histories may differ from here: start again
                    decoder.reset_episode()
                continue
            assert (static.generated, static.accepted_per_pass) == (dynamic.generated, dynamic.accepted_per_pass), \
                f"seed {SEED}, {rule} {threshold}, {shape}, observation {index}"
            compared += 1
    # the random miniature reads a row within the tolerance of a tie in about half its actions
    assert compared >= 2, f"seed {SEED}: near-ties left only {compared} of {2 * len(observations)}"


def test_an_unknown_kv_cache_is_refused_in_one_line(miniature):
    for make in (lambda: Decoder(miniature.model, kv_cache="paged"),
                 lambda: VerifierSession(miniature.model, "paged")):
        with pytest.raises(ValueError, match="kv_cache must be one of dynamic, static, got 'paged'"):
            make()


# --- compiled passes (vla/compiled_passes.py): traced with torch.compile's eager backend on the CPU ----

def compile_count() -> int:
    """Graphs torch.compile has traced in this process so far."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def test_compiled_passes_compute_what_eager_ones_do(miniature):
    """The prefill and random extends, tree passes with a kept path and rollbacks: each pass padded
    to its bucket, traced as one graph (fullgraph), gives the eager dynamic session's hidden states
    and length."""
    rng = fresh(500)
    pixels, prompt = random_observation(rng)
    sessions = [VerifierSession(miniature.model), VerifierSession(miniature.model, compiled=True)]
    assert sessions[1].static.compiled is not None and sessions[1].static.whole_length
    steps = [session.prefill(pixels, prompt) for session in sessions]
    prefill = prefill_bucket(sessions[0].length)
    random_passes(sessions, steps, rng, prompt, 10, 12, f"seed {SEED}")
    assert prefill in sessions[1].static.compiled.buckets_run
    assert sessions[1].static.compiled.buckets_run - {prefill} <= set(PASS_BUCKETS)


@pytest.mark.parametrize("kind,tree", [("mamba", None), ("llama", None), ("llama", TreeShape(16, 4, 4))],
                         ids=["mamba", "llama", "llama-tree:16:4:4"])
def test_a_warmed_up_decoder_compiles_nothing_during_its_actions(miniature, observations, trained_drafts, kind, tree):
    """Warm-up compiles the buckets of the decoder's passes (k = 3: 1, 2, 4; a tree's up to 17),
    of prefills of prompts around this one's length and the draft head's step; decoding
    observations with other prompts then traces no new graph (a Llama head's static cache, sized
    for the decoder's largest proposal, is never reallocated), and strict decoding gives AR's
    tokens except at near-ties."""
    decoder = Decoder(miniature.model, trained_drafts[kind], 3, Acceptance(0), tree=tree, compiled=True)
    assert trained_drafts[kind].steps_compiled
    assert decoder.largest_pass == (4 if tree is None else 17)
    pixels, prompt, _, _ = observations[0]
    assert decoder.warm_up(pixels, prompt) > 0
    compiled = static_kv_cache(miniature.model, compiled=True).compiled
    assert {1, 2, 4} <= compiled.buckets_run
    session = VerifierSession(miniature.model)
    session.prefill(pixels, prompt[:1])
    image = session.length - 1                                    # the image's positions after BOS
    assert set(warm_up_prefill_buckets(image, len(prompt), 4)) <= compiled.buckets_run
    assert {prefill_bucket(image + len(other) + guess) for _, other, _, _ in observations
            for guess in range(5)} <= compiled.buckets_run, "a prefill of these prompts is not warmed up"
    before = compile_count()
    capacity = trained_drafts[kind].static_cache.capacity if kind == "llama" else None
    for index, (pixels, prompt, ar_generated, ar_rows) in enumerate(observations):
        _, stats = decoder.decode(pixels, prompt)
        assert_ar_up_to_near_ties(stats.generated, ar_generated, ar_rows, f"seed {SEED}, observation {index}")
    assert compile_count() == before, "a pass or a draft step was compiled during an action"
    if kind == "llama":
        assert trained_drafts[kind].static_cache.capacity == capacity, "the Llama head's cache grew in an action"
    assert Decoder(miniature.model, trained_drafts[kind], 3).warm_up(pixels, prompt) == 0.0   # eager: nothing
    assert not trained_drafts[kind].steps_compiled


def assert_same_states(eager, other, message):
    """A Mamba draft's state tuples, or a Llama draft's keys and values over the written positions,
    within SHAPE_NOISE (a static cache's attention reads more, masked, positions: float32 noise)."""
    if isinstance(eager.state, tuple):
        for layer_eager, layer_other in zip(eager.state, other.state):
            for a, b in zip(layer_eager, layer_other):
                torch.testing.assert_close(a, b, atol=SHAPE_NOISE, rtol=SHAPE_NOISE,
                                           msg=lambda text: f"{message}: {text}")
        return
    length = eager.state.get_seq_length()
    assert other.state.get_seq_length() == length, message
    for a, b in ((eager.state.layers[0].keys, other.state.layers[0].keys),
                 (eager.state.layers[0].values, other.state.layers[0].values)):
        torch.testing.assert_close(a[:, :, :length], b[:, :, :length], atol=SHAPE_NOISE, rtol=SHAPE_NOISE,
                                   msg=lambda text: f"{message}: {text}")


class RecordedSteps:
    """Wraps a draft's one-token step (EagleDraft.step), keeping the predicted hidden states."""

    def __init__(self, draft):
        self.step, self.outputs = draft.step, []
        draft.step = self

    def __call__(self, hidden, token_input, state):
        out, state = self.step(hidden, token_input, state)
        self.outputs.append(out.detach().clone())
        return out, state


def assert_same_proposals_up_to_near_ties(proposals, other, recorded: RecordedSteps, action_rows, message):
    """`other` equals `proposals` (the eager dynamic draft's, its steps' outputs in `recorded`)
    up to the first token where that draft's two best action logits were within DRAFT_TIE."""
    for position, (mine, theirs) in enumerate(zip(proposals, other)):
        if mine != theirs:
            top = action_logits(recorded.outputs[-len(proposals) + position][0], action_rows).topk(2).values
            assert float(top[0] - top[1]) <= DRAFT_TIE, f"{message}: proposal {position} is {theirs}, not {mine}"
            return
    assert len(proposals) == len(other), message


def assert_same_candidates_up_to_near_ties(candidates, other, message):
    """A draft tree's candidates (tokens, parents, cumulative log-probabilities) equal `other`'s,
    scores within DRAFT_TIE, up to the first difference, which only a near-tie of two of the
    first's scores may cause (a swapped pair of siblings, or another candidate expanded)."""
    (tokens, parents, scores), (other_tokens, other_parents, other_scores) = candidates, other
    for index in range(len(tokens)):
        if (tokens[index], parents[index]) != (other_tokens[index], other_parents[index]):
            gap = float(scores.sort().values.diff().min())
            assert gap <= DRAFT_TIE, f"{message}: candidate {index} differs with no near-tie (closest scores {gap})"
            return
        assert abs(float(scores[index] - other_scores[index])) <= DRAFT_TIE, f"{message}: candidate {index}'s score"


def random_window(generator, width, length):
    return torch.randn(length, width, generator=generator), torch.randn(length, width, generator=generator)


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_a_compiled_draft_step_drafts_what_the_eager_one_does(miniature, trained_drafts, kind):
    """A draft head's one-token step traced as one graph (a Llama head's over its static cache):
    from random prompts and verifier hidden states, the same chains after every accepted prefix,
    and its state stays the eager one's (rollback to a snapshot included); states absorbed over
    any number of positions (Mamba: slices of other strides) reuse the one graph."""
    head = trained_drafts[kind].head
    eager, compiled = EagleDraft(head, miniature.model), EagleDraft(head, miniature.model)
    assert compiled.configure(compiled=True) and not eager.configure(compiled=False)
    assert (compiled.kv_cache, eager.kv_cache) == ("static" if kind == "llama" else "dynamic", "dynamic")
    recorded = RecordedSteps(eager)
    generator = torch.Generator().manual_seed(SEED % 2**31)
    width = miniature.model.hidden_size
    for accepted in range(5):
        hidden, embeds = random_window(generator, width, 30 + accepted)
        true_hidden = torch.randn(7, width, generator=generator)
        token = int(torch.randint(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, (1,), generator=generator))
        for draft in (eager, compiled):
            draft.begin(hidden, embeds)
        proposals = [draft.propose(token, 6) for draft in (eager, compiled)]
        message = f"seed {SEED}, {kind}, accepted {accepted}"
        assert_same_proposals_up_to_near_ties(*proposals, recorded, eager.action_rows, message)
        if accepted == 0:
            graphs = compile_count()
        for draft in (eager, compiled):
            draft.accept([token] + proposals[0][:accepted], true_hidden[:accepted + 1])
        assert_same_proposals_up_to_near_ties(eager.propose(proposals[0][0], 4), compiled.propose(proposals[0][0], 4),
                                              recorded, eager.action_rows, message)
        assert_same_states(eager, compiled, message)
    assert compile_count() == graphs, f"seed {SEED}: a step was compiled again for another state"


def test_a_static_llama_cache_drafts_what_a_dynamic_one_does(miniature, trained_drafts):
    """A Llama draft on its StaticLlamaCache against one on DynamicCaches, over actions with
    random prompt windows, accepted prefixes and draft trees: the same proposals (up to a near-tie
    of the dynamic draft's logits), the same keys and values after each rollback; the cache is
    allocated once and reused by every action (its tensors stay where they are)."""
    head = trained_drafts["llama"].head
    dynamic, static = EagleDraft(head, miniature.model), EagleDraft(head, miniature.model)
    static.configure("static")
    recorded = RecordedSteps(dynamic)
    generator = torch.Generator().manual_seed((SEED + 7) % 2**31)
    width, addresses = miniature.model.hidden_size, set()
    for action in range(6):
        message = f"seed {SEED}, action {action}"
        hidden, embeds = random_window(generator, width, int(torch.randint(3, 40, (1,), generator=generator)))
        for draft in (dynamic, static):
            draft.begin(hidden, embeds)
        addresses.add(static.state.layers[0].keys.data_ptr())
        read = 0
        while read < 6:
            token = int(torch.randint(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, (1,), generator=generator))
            if action % 2:                               # a draft tree, then a chain after it
                assert_same_candidates_up_to_near_ties(*[draft.tree_candidates(token, 3, 3)
                                                         for draft in (dynamic, static)], message)
            proposals = [draft.propose(token, 4) for draft in (dynamic, static)]
            assert_same_proposals_up_to_near_ties(*proposals, recorded, dynamic.action_rows, message)
            accepted = min(int(torch.randint(0, 6 - read, (1,), generator=generator)) + 1, 1 + len(proposals[0]))
            true_hidden = torch.randn(accepted, width, generator=generator)
            for draft in (dynamic, static):
                draft.accept(([token] + proposals[0])[:accepted], true_hidden)
            read += accepted
            assert_same_states(dynamic, static, message)
    assert static.state is static.static_cache and len(addresses) == 1, "the static cache was allocated again"


def test_a_static_llama_cache_grows_once_keeping_what_it_holds(miniature, trained_drafts):
    """Room for more positions than preallocated (a wide tree): one larger allocation, the keys
    and values written so far copied, the same cache object; a rollback only moves the length."""
    core = trained_drafts["llama"].head.core
    generator = torch.Generator().manual_seed((SEED + 11) % 2**31)
    width = miniature.model.hidden_size
    growth = StaticLlamaCache.GROWTH
    with torch.inference_mode():
        window = torch.randn(10, width, generator=generator)
        cache, dynamic = core.absorb(window, core.static_cache(10, torch.float32, "cpu")), core.absorb(window)
        assert (cache.capacity, cache.length) == (growth, 10)
        keys = cache.layers[0].keys[:, :, :10].clone()
        cache.reserve(growth - 10)                                         # fits: nothing allocated
        assert cache.capacity == growth
        level = torch.randn(1, growth, width, generator=generator)        # 10 + growth positions
        (out, grown), (expected, dynamic) = core(level, cache), core(level, dynamic)
        assert grown is cache and (cache.capacity, cache.length) == (2 * growth, 10 + growth)
        assert torch.equal(cache.layers[0].keys[:, :, :10], keys)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0, msg=lambda text: f"seed {SEED}: {text}")
        core.restore(cache, 10)
        core.restore(dynamic, 10)
        assert (cache.capacity, cache.length) == (2 * growth, 10)
        step = torch.randn(1, width, generator=generator)
        torch.testing.assert_close(core.step_rows(step, cache)[0], core.step_rows(step, dynamic)[0], atol=1e-5,
                                   rtol=0, msg=lambda text: f"seed {SEED}: {text}")


def test_a_padded_pass_has_one_key_per_padding_query():
    allowed = tree_attention_mask(5, [-1, 0, -1])               # 3 real queries after 5 cached positions
    allowed = torch.nn.functional.pad(allowed, (0, 16 - allowed.shape[-1]), value=False)
    padded = pad_query_rows(allowed, 8, 5)                     # bucket 8: 5 padding queries, keys 8..12
    assert padded.shape == (1, 1, 8, 16) and torch.equal(padded[:, :, :3], allowed)
    assert padded[0, 0, 3:].nonzero().tolist() == [[i, 8 + i] for i in range(5)]
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    assert torch.equal(pad_query_rows(additive, 8, 5) == 0, padded)
    assert [bucket_for(n) for n in (1, 3, 4, 5, 50, 64, 65)] == [1, 4, 4, 8, 64, 64, None]


def test_the_compile_setting_is_checked_and_auto_compiles_on_cuda_only():
    assert [compile_on(mode, "cpu") for mode in ("auto", "always", "never")] == [False, True, False]
    assert [compile_on(mode, "cuda:1") for mode in ("auto", "always", "never")] == [True, True, False]
    with pytest.raises(ValueError, match="compile must be one of auto, always, never, got 'yes'"):
        compile_on("yes", "cpu")
    with pytest.raises(ValueError, match="compile 'yes' is not one of auto, always, never"):
        PolicyConfig(compile="yes").check_compile()
