"""Draft trees: one verifier pass over a token tree, and the cache kept for the accepted path.

The miniature verifier on fresh random trees: every node's logits and hidden state in a tree
pass equal those of a chain pass over the node's root-to-node path alone (brute force, one pass
per path), up to the float32 noise of passes of other shapes; after `keep_path` the cache equals
one built from the path's tokens. Every test that draws prints its seed in the failure message.
"""
import os

import numpy as np
import pytest
import torch

from spec_vla_ros.vla.constants import ACTION_TOKEN_MAX, ACTION_TOKEN_MIN
from spec_vla_ros.vla.session import (VerifierSession, check_tree, move_positions_, tree_attention_mask,
                                      tree_depths, tree_position_ids)

SEED = int.from_bytes(os.urandom(4), "little")
# Passes of other shapes move float32 logits of the miniature by ~1e-5 (decoding.acceptance).
SHAPE_NOISE = 1e-4


def fresh(offset: int = 0) -> np.random.Generator:
    return np.random.default_rng(SEED + offset)


def random_tree(rng: np.random.Generator, count: int, roots: int = 1) -> list[int]:
    """Parents first; the first `roots` nodes follow the prefix, the rest hang anywhere before them."""
    return [-1 if index < roots else int(rng.integers(0, index)) for index in range(count)]


def path_to(node: int, parents: list[int]) -> list[int]:
    path = []
    while node >= 0:
        path.append(node)
        node = parents[node]
    return path[::-1]


@pytest.fixture(scope="module")
def observation(miniature):
    rng = fresh(1)
    pixels = torch.from_numpy(rng.standard_normal((6, 224, 224)).astype(np.float32))
    prompt = [1] + rng.integers(300, 29000, int(rng.integers(8, 20))).tolist() + [29871]
    return pixels, prompt


def random_tokens(rng, count):
    return rng.integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, count).tolist()


def test_mask_and_positions_follow_the_ancestors():
    """Written out for a small tree: 0 and 3 follow the prefix (2 positions), 1 and 2 hang from 0, 4 from 2."""
    parents = [-1, 0, 0, -1, 2]
    assert tree_depths(parents) == [0, 1, 1, 0, 2]
    assert tree_position_ids(2, parents).tolist() == [[2, 3, 3, 2, 4]]
    expected = [[1, 1, 1, 0, 0, 0, 0],
                [1, 1, 1, 1, 0, 0, 0],
                [1, 1, 1, 0, 1, 0, 0],
                [1, 1, 0, 0, 0, 1, 0],
                [1, 1, 1, 0, 1, 0, 1]]
    assert tree_attention_mask(2, parents)[0, 0].int().tolist() == expected


def test_a_tree_that_is_not_parents_first_is_refused():
    for parents in ([0], [-1, 1], [-1, 3, 0], [-2], [-1, 0.5]):
        with pytest.raises(ValueError, match="expected -1 .* or an earlier node"):
            check_tree(parents)
    with pytest.raises(ValueError, match="one parent per token"):
        check_tree([-1, 0], 3)


def test_every_node_of_a_tree_pass_is_its_path_verified_as_a_chain(miniature, observation):
    """Brute force: each node's root-to-node path in its own chain pass after the same prefill."""
    pixels, prompt = observation
    for trial in range(3):
        rng = fresh(100 + trial)
        parents = random_tree(rng, int(rng.integers(6, 24)))
        tokens = random_tokens(rng, len(parents))
        early = random_tokens(rng, int(rng.integers(0, 3)))         # guesses kept by the prefill
        session = VerifierSession(miniature.model)
        session.prefill(pixels, prompt, early)
        prefix = session.length
        step = session.verify_tree(tokens, parents)
        assert session.length == prefix + len(tokens) and step.num_logits == len(tokens)
        chain = VerifierSession(miniature.model)
        chain.prefill(pixels, prompt, early)
        for node in range(len(tokens)):
            path = path_to(node, parents)
            alone = chain.extend([tokens[i] for i in path])
            chain.truncate(prefix)
            message = f"seed {SEED}, trial {trial}, node {node}, path {path}"
            torch.testing.assert_close(step.logits[path], alone.logits, atol=SHAPE_NOISE, rtol=0, msg=message)
            torch.testing.assert_close(step.hidden[path], alone.hidden, atol=SHAPE_NOISE, rtol=0, msg=message)


def test_a_tree_of_early_guesses_in_the_prefill_is_each_path_prefilled_alone(miniature, observation):
    pixels, prompt = observation
    rng = fresh(200)
    parents = random_tree(rng, 12, roots=3)
    tokens = random_tokens(rng, len(parents))
    session = VerifierSession(miniature.model)
    step = session.prefill(pixels, prompt, tokens, parents)
    prompt_length = session.length - len(tokens)
    for node in range(len(tokens)):
        path = path_to(node, parents)
        alone = VerifierSession(miniature.model).prefill(pixels, prompt, [tokens[i] for i in path])
        rows = [0] + [i + 1 for i in path]                  # the prompt's last position, then the path
        message = f"seed {SEED}, node {node}, path {path}"
        torch.testing.assert_close(step.logits[rows], alone.logits, atol=SHAPE_NOISE, rtol=0, msg=message)
        torch.testing.assert_close(step.hidden[prompt_length + np.array(path)], alone.hidden[prompt_length:],
                                   atol=SHAPE_NOISE, rtol=0, msg=message)


def test_the_cache_after_keep_path_is_the_cache_of_the_accepted_tokens(miniature, observation):
    """Keys and values of every layer, and the next pass read from them."""
    pixels, prompt = observation
    for trial in range(3):
        rng = fresh(300 + trial)
        parents = random_tree(rng, int(rng.integers(5, 20)))
        tokens = random_tokens(rng, len(parents))
        path = path_to(int(rng.integers(0, len(parents))), parents)
        following = random_tokens(rng, 2)
        session = VerifierSession(miniature.model)
        session.prefill(pixels, prompt)
        session.verify_tree(tokens, parents)
        session.keep_path(path)
        reference = VerifierSession(miniature.model)
        reference.prefill(pixels, prompt)
        reference.extend([tokens[i] for i in path])
        message = f"seed {SEED}, trial {trial}, path {path} of {parents}"
        assert session.length == reference.length, message
        for kept, built in zip(session.cache.layers, reference.cache.layers):
            torch.testing.assert_close(kept.keys, built.keys, atol=SHAPE_NOISE, rtol=0, msg=message)
            torch.testing.assert_close(kept.values, built.values, atol=SHAPE_NOISE, rtol=0, msg=message)
        torch.testing.assert_close(session.extend(following).logits, reference.extend(following).logits,
                                   atol=SHAPE_NOISE, rtol=0, msg=message)


def test_keep_path_keeps_the_prefix_alone_and_refuses_what_is_not_a_path(miniature, observation):
    pixels, prompt = observation
    session = VerifierSession(miniature.model)
    session.prefill(pixels, prompt)
    prefix = session.length
    with pytest.raises(RuntimeError, match="without a tree pass"):
        session.keep_path([0])
    session.verify_tree([31800, 31801, 31802], [-1, 0, 0])
    with pytest.raises(ValueError, match="not a root-to-node path"):
        session.keep_path([0, 1, 2])                      # 1 and 2 are siblings
    with pytest.raises(ValueError, match="not a root-to-node path"):
        session.keep_path([1])                            # does not start at the root
    session.keep_path([])
    assert session.length == prefix


def test_move_positions_is_a_gather_along_the_positions():
    rng = fresh(400)
    cache = torch.from_numpy(rng.standard_normal((1, 2, 9, 3)).astype(np.float32))
    before = cache.clone()
    move_positions_(cache, 4, [0, 2, 4])
    assert torch.equal(cache[..., :4, :], before[..., :4, :])
    assert torch.equal(cache[..., 4:7, :], before[..., [4, 6, 8], :])


# --- judging a tree: Spec-VLA's rule over every path ---------------------------------------------

from scripted_verifier import Script, ScriptedSession  # noqa: E402
from spec_vla_ros.decoding.acceptance import Acceptance  # noqa: E402
from spec_vla_ros.decoding.decoder import Decoder, judge_tree  # noqa: E402
from spec_vla_ros.drafts.base import Draft  # noqa: E402
from spec_vla_ros.drafts.tree import MODEL, DraftTree, TreeShape  # noqa: E402
from spec_vla_ros.vla.constants import ACTION_DIM, EOS_TOKEN_ID, PADDED_VOCAB_SIZE  # noqa: E402
from spec_vla_ros.vla.session import VerifierStep  # noqa: E402


def one_hot_step(verifier_tokens: list[int]) -> VerifierStep:
    """A pass whose row r's argmax is verifier_tokens[r] (row 0: the pending position, r = node + 1)."""
    logits = torch.zeros(len(verifier_tokens), PADDED_VOCAB_SIZE)
    logits[torch.arange(len(verifier_tokens)), torch.tensor(verifier_tokens)] = 1.0
    return VerifierStep(torch.zeros(len(verifier_tokens), 4), torch.zeros(len(verifier_tokens), 4), logits=logits)


def spec_vla_posterior(tree: DraftTree, verifier_tokens: list[int], start: int, acceptance: Acceptance):
    """Spec-VLA / EAGLE's evaluate_posterior, written over the tree's root-to-leaf candidates: per
    candidate, the accepted length is the run of positions whose draft token passes the rule
    against the verifier's token at its parent (cumprod of the posterior mask); the best candidate
    has the longest run, the first such candidate in order (torch.argmax) winning ties. Candidates
    are ordered by their node indices (lexicographically). Returns (kept nodes, tokens the pass adds)."""
    first, children = tree.children()
    leaves = [node for node in range(len(tree)) if not children[node]]
    candidates = sorted(tree.path(leaf) for leaf in leaves) or [[]]
    lengths = []
    for path in candidates:
        length = 0
        for depth, node in enumerate(path):
            parent_row = 0 if depth == 0 else path[depth - 1] + 1
            if start + depth >= ACTION_DIM or not acceptance.accepts(tree.tokens[node], verifier_tokens[parent_row],
                                                                     start + depth):
                break
            length += 1
            if tree.tokens[node] == EOS_TOKEN_ID:
                break
        lengths.append(length)
    best = candidates[int(np.argmax(lengths))][:max(lengths)]
    own_row = best[-1] + 1 if best else 0
    tokens = [tree.tokens[node] for node in best]
    if not (tokens and tokens[-1] == EOS_TOKEN_ID):
        tokens.append(verifier_tokens[own_row])
    return best, tokens[:ACTION_DIM - start]


def random_draft_tree(rng, count: int, near: list[int] | None = None, spread: int = 4) -> DraftTree:
    parents = random_tree(rng, count, roots=int(rng.integers(1, 4)))
    tokens = random_tokens(rng, count) if near is None else \
        [int(np.clip(near[min(d, len(near) - 1)] + rng.integers(-spread, spread + 1), ACTION_TOKEN_MIN, ACTION_TOKEN_MAX))
         for d in tree_depths(parents)]
    return DraftTree(tokens, parents, [MODEL] * count)


@pytest.mark.parametrize("rule,threshold", [("strict", 0), ("relaxed", 3), ("relaxed", 9), ("relaxed-guarded", 9)])
def test_the_kept_path_is_spec_vlas_best_candidate(rule, threshold):
    """Random trees whose tokens lie near the verifier's: judge_tree keeps the candidate (and adds
    the tokens) that Spec-VLA's evaluate_posterior picks over every root-to-leaf path."""
    acceptance = Acceptance.from_name(rule, threshold)
    for trial in range(300):
        rng = fresh(1000 + trial)
        start = int(rng.integers(0, ACTION_DIM))
        truth = random_tokens(rng, ACTION_DIM)
        tree = random_draft_tree(rng, int(rng.integers(1, 30)), near=truth[start:], spread=threshold + 2)
        depths = tree_depths(list(tree.parents))
        verifier_tokens = [truth[start]] + [truth[min(start + depth + 1, ACTION_DIM - 1)] for depth in depths]
        if rng.random() < 0.2:                                    # an EOS from the verifier somewhere
            verifier_tokens[int(rng.integers(0, len(verifier_tokens)))] = EOS_TOKEN_ID
        judged = judge_tree(tree, one_hot_step(verifier_tokens), start, acceptance)
        best, tokens = spec_vla_posterior(tree, verifier_tokens, start, acceptance)
        message = f"seed {SEED}, trial {trial}, {rule}:{threshold}, start {start}, tree {tree}, verifier {verifier_tokens}"
        assert (judged.path, judged.tokens) == (best, tokens), message
        assert judged.judged == len(best) + bool(tree.children()[1][best[-1]] if best else tree.children()[0]), message


def test_relaxed_acceptance_per_path_by_hand():
    """Two first proposals, both within 9 of the verifier's 31900: 31895 (node 0) leads to a path of
    two, 31905 (node 1) to a path of three; relaxed keeps the longer, strict keeps only what equals
    the verifier's tokens (none of them), guarded refuses a gripper that changes side."""
    tree = DraftTree([31895, 31905, 31800, 31700, 31810, 31820],
                     [-1, -1, 0, 1, 1, 4], [MODEL] * 6)
    #   row:        pending  n0     n1     n2     n3     n4     n5
    verifier = [31900, 31804, 31812, 31600, 31000, 31826, 31830]
    relaxed = judge_tree(tree, one_hot_step(verifier), 0, Acceptance.from_name("relaxed", 9))
    assert relaxed.path == [1, 4, 5] and relaxed.tokens == [31905, 31810, 31820, 31830] and relaxed.judged == 3
    tight = judge_tree(tree, one_hot_step(verifier), 0, Acceptance.from_name("relaxed", 5))
    # threshold 5: both first proposals pass, and paths of two through each (n0-n2, n1-n4), but not
    # n5 (31820 against 31826): equally long, the first in node order wins
    assert tight.path == [0, 2] and tight.tokens == [31895, 31800, 31600]
    strict = judge_tree(tree, one_hot_step(verifier), 0, Acceptance(0))
    assert strict.path == [] and strict.tokens == [31900] and strict.judged == 1
    # the same tree for the last three tokens: the gripper (token 6) is node 5, 31820 against the
    # verifier's 31830 -- the same side, so guarded keeps it; 31810 at token 5 is a pose dim
    guarded = judge_tree(tree, one_hot_step(verifier), 4, Acceptance.from_name("relaxed-guarded", 9))
    assert guarded.path == [1, 4, 5] and guarded.tokens == [31905, 31810, 31820]   # cut after the 7th token
    flipped = one_hot_step(verifier[:5] + [31800] + verifier[6:])   # the verifier's gripper after n4: 31800 opens
    # guarded refuses n5 (closes) against 31800 (opens): the paths of two remain, n0-n2 first
    assert judge_tree(tree, flipped, 4, Acceptance.from_name("relaxed-guarded", 30)).path == [0, 2]
    assert judge_tree(tree, flipped, 4, Acceptance.from_name("relaxed", 30)).path == [1, 4, 5]


# --- decoding with trees: a scripted verifier (exact) -------------------------------------------

class TreeScriptedSession(ScriptedSession):
    """ScriptedSession with tree passes: node i's row is the script's choice after the committed
    tokens and node i's path."""

    def prefill(self, pixel_values, prompt_ids, proposals=(), parents=None):
        if parents is None:
            return super().prefill(pixel_values, prompt_ids, proposals)
        self.prefilled, self.fed = True, []
        return self._tree_step(list(proposals), list(parents), self.PROMPT_LENGTH + len(proposals), with_root=True)

    def verify_tree(self, token_ids, parents):
        # the root (the pending token) is fed in this pass: its row is the choice after it
        return self._tree_step(list(token_ids), list(parents), len(token_ids), with_root=False)

    def _tree_step(self, tokens, parents, positions, with_root):
        self.passes += 1
        self.tree = (len(self.fed), tokens, parents)
        paths = DraftTree(tokens, parents, [MODEL] * len(tokens)).paths()
        chosen = ([self.script.next_token(self.fed)] if with_root else []) + \
            [self.script.next_token(self.fed + list(path)) for path in paths]
        self.fed = self.fed + tokens
        logits = torch.zeros(len(chosen), PADDED_VOCAB_SIZE)
        logits[torch.arange(len(chosen)), torch.tensor(chosen)] = 1.0
        noise = lambda: torch.randn(positions, self.hidden_size, generator=self.generator).to(self.dtype)
        return VerifierStep(logits=logits, hidden=noise(), input_embeds=noise())

    def keep_path(self, path):
        committed, tokens, parents = self.tree
        check_path(path, parents)
        self.fed = self.fed[:committed] + [tokens[node] for node in path]


class ScriptedTreeDraft(Draft):
    """Proposes random trees; with probability `right` each level holds the truth's token at a
    random place (a branch of the truth grows through the tree), else only near misses."""

    name = "scripted-tree"

    def __init__(self, right: float, seed: int, early: bool = True):
        self.right, self.rng, self.early = right, np.random.default_rng(seed), early
        self.truth: list[int] = []
        self.produced = 0

    def _tree(self, start: int, shape: TreeShape) -> DraftTree:
        builder_paths, rng = [], self.rng
        for _ in range(int(rng.integers(1, shape.top_k + 1))):
            path = []
            for position in range(start, min(start + shape.depth, len(self.truth) + 1)):
                truth = self.truth[position] if position < len(self.truth) else EOS_TOKEN_ID
                path.append(truth if rng.random() < self.right else
                            int(np.clip(truth + rng.integers(-3, 4), ACTION_TOKEN_MIN, ACTION_TOKEN_MAX)))
            builder_paths.append(path)
        from spec_vla_ros.drafts.tree import TreeBuilder
        builder = TreeBuilder(shape.nodes)
        for path in builder_paths:
            builder.add(path, MODEL)
        return builder.tree()

    def propose_early_tree(self, shape):
        self.produced = 0
        return self._tree(0, TreeShape(max(shape.nodes, ACTION_DIM), ACTION_DIM, max(shape.top_k, 2))) \
            if self.early else DraftTree()

    def begin(self, hidden, input_embeds):
        self.produced = 0

    def propose_tree(self, next_token, shape):
        return self._tree(self.produced + 1, shape)

    def propose(self, next_token, k):
        return list(self._tree(self.produced + 1, TreeShape.chain(k)).tokens) if k else []

    def accept(self, tokens, hidden):
        self.produced += len(tokens)


from spec_vla_ros.vla.session import check_path  # noqa: E402
from test_speculative import PROMPT, random_truths  # noqa: E402

TREE_SHAPES = [TreeShape(8, 3, 4), TreeShape(16, 4, 8), TreeShape(50, 4, 8), TreeShape(32, 6, 3)]


def scripted_tree_decode(model, draft, shape, acceptance, truths, seed=0):
    current = []
    decoder = Decoder(model, draft, 4, acceptance, tree=shape, session_factory=lambda: TreeScriptedSession(
        Script(current[0]), model.hidden_size, seed=seed))
    outputs = []
    for truth in truths:
        current[:] = [truth]
        if isinstance(draft, ScriptedTreeDraft):
            draft.truth = truth
        outputs.append(decoder.decode(None, PROMPT))
    return outputs


@pytest.mark.parametrize("shape", TREE_SHAPES, ids=lambda shape: shape.name)
def test_strict_tree_decoding_is_ar_exactly_on_a_scripted_verifier(miniature, shape):
    truths = random_truths(fresh(2000 + shape.nodes), 24)
    for right in (0.0, 0.5, 0.9, 1.0):
        draft = ScriptedTreeDraft(right, seed=SEED + shape.nodes)
        for (tokens, stats), truth in zip(scripted_tree_decode(miniature.model, draft, shape, Acceptance(0), truths),
                                          truths):
            message = f"seed {SEED}, shape {shape.name}, right {right}, truth {truth}, stats {stats}"
            assert stats.generated == truth, message
            assert stats.tree_shape == shape.name and stats.verifier_passes == len(stats.accepted_per_pass), message
            assert len(stats.judged_per_pass) == len(stats.source_per_pass) == stats.verifier_passes, message
            assert all(a <= j <= a + 1 for a, j in zip(stats.accepted_per_pass, stats.judged_per_pass)), message
            assert sum(stats.accepted_per_pass) <= len(truth) <= sum(stats.accepted_per_pass) + stats.verifier_passes
            if right == 1.0:      # the truth is in every tree, early guesses included: one pass
                assert stats.verifier_passes == 1, message


# --- model drafts' trees ----------------------------------------------------------------------------

from spec_vla_ros.drafts.eagle_head import action_logits  # noqa: E402
from test_speculative import (assert_ar_up_to_near_ties, carrying_head_draft, observations,  # noqa: E402,F401
                              trained_drafts)


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_every_candidate_of_the_dynamic_tree_scores_its_path_drafted_alone(miniature, observation, trained_drafts,
                                                                          kind):
    """EAGLE-2's candidates, drafted a level at a time in batched branches (Mamba: one state per
    branch; Llama: the level appended under a tree mask), score what stepping the head along each
    candidate's path alone gives: the sum of its log-probabilities over the 256 action tokens (at
    the head's calibrated temperature)."""
    from spec_vla_ros.vla.session import VerifierSession as Session
    draft = trained_drafts[kind]
    pixels, prompt = observation
    step = Session(miniature.model).prefill(pixels, prompt)
    draft.begin(step.hidden, step.input_embeds)
    rng = fresh(3000)
    next_token = int(rng.integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1))
    tokens, parents, scores = draft.tree_candidates(next_token, 4, 3)
    assert len(tokens) == 3 + 3 * 9 and scores.shape == (len(tokens),)
    head, core = draft.head, draft.head.core
    committed = draft.snapshots[0]                              # the state before the first step
    tree = DraftTree(tokens, parents, [MODEL] * len(tokens))
    with torch.inference_mode():
        for node in rng.choice(len(tokens), 10, replace=False).tolist():
            state = core.restore(draft.state, committed)
            hidden, token, total = draft.pending, next_token, 0.0
            for index in tree.path(node):
                hidden, state = head.step(hidden, draft._token_input(token), state)
                logits = action_logits(hidden[0], draft.action_rows).float() / draft.temperature
                log_probs = torch.log_softmax(logits, dim=-1)
                token = tokens[index]
                total += float(log_probs[token - ACTION_TOKEN_MIN])
            # float32 noise of a batched step (~1e-6 on a logit) grows by 1 / temperature per level
            tolerance = 2e-5 * len(tree.path(node)) / draft.temperature
            assert total == pytest.approx(float(scores[node]), abs=tolerance), f"seed {SEED}, {kind}, node {node}"
    draft.propose(next_token, 1)                                  # the draft still works as before


@pytest.mark.parametrize("kind", ["mamba", "llama"])
def test_a_dynamic_tree_holds_the_best_candidates_parents_first(miniature, observation, trained_drafts, kind):
    draft = trained_drafts[kind]
    from spec_vla_ros.vla.session import VerifierSession as Session
    pixels, prompt = observation
    step = Session(miniature.model).prefill(pixels, prompt)
    draft.begin(step.hidden, step.input_embeds)
    chain = draft.propose(31900, 4)
    tree = draft.propose_tree(31900, TreeShape(20, 4, 8))
    assert len(tree) == 20 and 1 <= tree.depth <= 4 and set(tree.sources) == {MODEL}
    assert tree.paths()[tree.children()[0][0]] == (chain[0],)     # the chain's first proposal leads
    tokens, parents, scores = draft.tree_candidates(31900, 4, 8)
    kept = sorted(scores.tolist(), reverse=True)[:20]
    paths = DraftTree(tokens, parents, [MODEL] * len(tokens)).paths()
    score_of = dict(zip(paths, scores.tolist()))
    assert sorted((score_of[path] for path in tree.paths()), reverse=True) == pytest.approx(kept)
    depths = tree_depths(list(tree.parents))
    assert depths == sorted(depths)


# --- the miniature: strict tree decoding is AR's up to near-ties ------------------------------------

def tree_drafts(miniature, trained_drafts):
    from spec_vla_ros.drafts.registry import load_draft
    return {**trained_drafts, "history": load_draft("history", "", miniature),
            "carrying-mamba": carrying_head_draft(miniature.model)}


@pytest.mark.parametrize("shape", [TreeShape(8, 3, 4), TreeShape(50, 4, 8), TreeShape(32, 6, 8, hybrid=True)],
                         ids=lambda shape: shape.name)
def test_strict_tree_decoding_gives_ar_tokens_except_at_near_ties(miniature, observations, trained_drafts, shape):
    for name, draft in tree_drafts(miniature, trained_drafts).items():
        decoder = Decoder(miniature.model, draft, 4, Acceptance(0), tree=shape)
        decoder.reset_episode()
        for index, (pixels, prompt, ar_generated, ar_rows) in enumerate(observations):
            tokens, stats = decoder.decode(pixels, prompt)
            message = f"seed {SEED}, draft {name}, shape {shape.name}, observation {index}"
            assert_ar_up_to_near_ties(stats.generated, ar_generated, ar_rows, message)
            assert stats.tree_shape == shape.name and max(stats.proposed_per_pass[1:], default=0) <= shape.nodes


# --- retrieval and the hybrid tree -------------------------------------------------------------------

from spec_vla_ros.drafts.hybrid import HybridDraft, merge  # noqa: E402
from spec_vla_ros.drafts.history import HistoryDraft  # noqa: E402
from spec_vla_ros.drafts.retrieval import (EPISODE_WEIGHT, PSEUDO_COUNT, ActionDatastore, RetrievalDraft,  # noqa: E402
                                           read_datastore, write_datastore)
from spec_vla_ros.drafts.tree import HISTORY, RETRIEVAL, TreeBuilder  # noqa: E402


def test_retrieval_continues_the_longest_matching_key_weighted_by_its_rows():
    a = [31800, 31801, 31802, 31803, 31804, 31805, 31806]
    rows = [a, a, a[:3] + [31900, 31901, 31902, 31903], [31700, 31701, 31802, 31903, 31904, 31905, 31906]]
    draft = RetrievalDraft(ActionDatastore(np.array(rows)))
    draft.begin(None, None)
    # a0 a1 a2 known (next token a2): three rows match all three; two continue with a3 = 31803
    scored = draft.continuations(a[:3], 2, 10)
    assert scored[0] == ((31803,), pytest.approx(np.log(2 / (3 + PSEUDO_COUNT))))
    assert [path for path, _ in scored] == [(31803,), (31803, 31804), (31900,), (31900, 31901)]
    # a key of one token when no longer one matches: only a2 = 31802 at position 2, all four rows
    assert [path for path, _ in draft.continuations([31000, 31000, 31802], 1, 10)] == [(31803,), (31900,),
                                                                                       (31903,)]
    assert draft.continuations([31000, 31000, 31000], 1, 10) == []            # no row has it
    draft.accept(a[:2], None)                                                # a0, a1 produced; a2 pending
    tree = draft.propose_tree(31802, TreeShape(3, 2, 4))
    assert tree.sources == (RETRIEVAL,) * 3 and len(tree) == 3
    assert draft.propose(31802, 4) == a[3:7]
    # this episode's own action outweighs the traces
    draft.end_action([31000] * 3 + [31950] * 4)
    assert draft.continuations([31000, 31000, 31000], 1, 10) == [((31950,), pytest.approx(
        np.log(EPISODE_WEIGHT / (EPISODE_WEIGHT + PSEUDO_COUNT))))]


def test_retrieval_before_the_prefill_proposes_what_followed_an_equal_action():
    a, b, c = ([31800 + 10 * i + j for j in range(7)] for i in range(3))
    draft = RetrievalDraft(ActionDatastore(np.array([a, b, c]), np.array([-1, 0, -1])))     # b followed a
    assert draft.propose_early_tree(TreeShape(14, 7, 2)) == DraftTree()                    # a new episode
    draft.end_action(a)
    assert draft.propose_early_tree(TreeShape(14, 7, 2)).paths()[-1] == tuple(b)
    draft.end_action(c)
    assert draft.propose_early(7) == []                       # nothing ever followed c
    draft.end_action(a)                                       # c followed a in this episode: weighs more
    assert draft.propose_early(7) == c


def test_a_datastore_reads_back_and_refuses_what_is_not_one(tmp_path):
    rng = fresh(5000)
    store = ActionDatastore(random_tokens(rng, 35), np.array([-1, 0, 1, -1, 3]), "miniature-seed0")
    write_datastore(tmp_path / "actions.safetensors", store, "test")
    back = read_datastore(tmp_path / "actions.safetensors")
    assert np.array_equal(back.tokens, store.tokens) and np.array_equal(back.previous, store.previous)
    assert back.verifier == "miniature-seed0"
    (tmp_path / "broken.safetensors").write_bytes(b"not a datastore")
    with pytest.raises(ValueError, match="broken.safetensors: not a readable action datastore"):
        read_datastore(tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match="one row index .* per row"):
        ActionDatastore(store.tokens, np.array([-1, 7, 0, 0, 0]))


def test_the_registry_refuses_a_datastore_of_another_verifier(tmp_path):
    from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS, resolve
    import shutil
    shutil.copytree(PACKAGED_CHECKPOINTS / "mamba", tmp_path / "mamba")
    write_datastore(tmp_path / "actions.safetensors", ActionDatastore(np.zeros((1, 7)), verifier="other-vla"), "x")
    with pytest.raises(ValueError, match="holds actions of verifier 'other-vla', not of 'miniature-seed0'"):
        resolve("mamba", str(tmp_path), "miniature")
    write_datastore(tmp_path / "actions.safetensors", ActionDatastore(np.zeros((1, 7)), verifier="miniature-seed0"),
                    "x")
    assert resolve("mamba", str(tmp_path), "miniature").datastore == tmp_path / "actions.safetensors"
    assert resolve("history", str(tmp_path), "miniature").datastore == tmp_path / "actions.safetensors"


def test_merge_keeps_the_best_scored_nodes_with_their_ancestors_under_the_budget():
    scored = [((1,), -0.1, MODEL), ((1, 2), -0.5, MODEL), ((1, 2, 3), -3.0, MODEL), ((4,), -1.0, HISTORY),
              ((4, 5), -1.2, HISTORY), ((1, 6), -0.2, RETRIEVAL), ((7, 8, 9), -0.3, RETRIEVAL)]
    tree = merge(scored, 6)
    assert set(tree.paths()) == {(1,), (1, 6), (7,), (7, 8), (7, 8, 9), (1, 2)}
    assert dict(zip(tree.paths(), tree.sources))[(7, 8)] == RETRIEVAL and len(tree) == 6
    assert merge(scored, 100).paths().count((1, 2, 3)) == 1
    builder = TreeBuilder(2)
    assert builder.add((1, 2, 3), MODEL) == 2 and builder.add((1, 2), HISTORY) == 2 and len(builder) == 2


def test_the_history_branch_rises_as_the_scene_stays_still():
    hybrid = HybridDraft(None)
    action = [31800 + i for i in range(7)]
    first = hybrid.history_log_prob(3)
    for _ in range(4):
        hybrid.propose_early_tree(TreeShape(8, 4, 2, hybrid=True))
        hybrid.begin(None, None)
        hybrid.end_action(action)
    assert first == pytest.approx(np.log(0.5)) and hybrid.history_log_prob(3) == pytest.approx(np.log(4 / 5))
    early = hybrid.propose_early_tree(TreeShape(8, 4, 2, hybrid=True))
    # the previous action, proposed by history and by retrieval (it followed itself three times)
    assert early.paths()[-1] == tuple(action) and set(early.sources) <= {HISTORY, RETRIEVAL}
    hybrid.reset_episode()
    assert hybrid.history_log_prob(3) == pytest.approx(np.log(0.5))


@pytest.mark.parametrize("shape", [TreeShape(8, 3, 2, hybrid=True), TreeShape(50, 6, 8, hybrid=True)],
                         ids=lambda shape: shape.name)
def test_strict_hybrid_decoding_is_ar_exactly_on_a_scripted_verifier(miniature, shape):
    """The hybrid merges the scripted tree draft, the previous action and retrieval from a
    datastore holding some of the truths: still AR's tokens, every source labelled."""
    truths = random_truths(fresh(6000 + shape.nodes), 24)
    store = ActionDatastore(np.array([t for t in truths[::3] if len(t) == ACTION_DIM]))
    for right in (0.0, 0.6):
        draft = ScriptedTreeDraft(right, seed=SEED + shape.nodes, early=False)
        draft.datastore = store
        outputs = scripted_tree_decode(miniature.model, draft, shape, Acceptance(0), truths)
        kept = set()
        for (tokens, stats), truth in zip(outputs, truths):
            assert stats.generated == truth, f"seed {SEED}, shape {shape.name}, right {right}, truth {truth}"
            assert max(stats.proposed_per_pass[1:], default=0) <= shape.nodes
            kept |= set(stats.source_per_pass) - {""}
        assert kept <= {MODEL, HISTORY, RETRIEVAL} and RETRIEVAL in kept, f"seed {SEED}: {kept}"


# --- the decode benchmark compares chains and trees ------------------------------------------------

def test_decode_benchmark_compares_chains_and_trees(tmp_path, miniature, capsys):
    import argparse
    import json

    from spec_vla_ros.commands.benchmarks import decode
    parser = argparse.ArgumentParser()
    decode.add_arguments(parser)
    args = parser.parse_args(["--drafts", "history", "mamba", "--thresholds", "0", "--num-draft-tokens", "2",
                              "--trees", "chain", "tree:8:3:4", "hybrid:8", "--episodes", "1", "--steps-per-episode",
                              "2", "--warmup", "0", "--arch-repeats", "1", "--seed", str(SEED % 10**6),
                              "--json", str(tmp_path / "bench.json"), "--markdown", str(tmp_path / "bench.md")])
    output = decode.run(args)
    rows = {(r["draft"], r["tree"]): r for r in output["results"]}
    assert set(rows) == {("ar", ""), ("ar-reshaped", ""), *((draft, shape) for draft in ("history", "mamba")
                                                          for shape in ("chain:2", "tree:8:3:4", "hybrid:8:6:8"))}
    for (draft, shape), row in rows.items():
        assert row["actions"] == 2 and row["gpu_ms"] > 0, (draft, shape)
        assert sum(row["kept_sources"].values()) <= row["passes_per_action"] * 2
        if shape.startswith("tree") and draft == "mamba":
            assert max(p for profile in row["profiles"] for p in profile["proposed_per_pass"][1:]) <= 8
    assert rows[("ar", "")]["gpu_speedup"] == 1.0 and rows[("ar", "")]["same_as_ar"] == 1.0
    assert set(rows[("mamba", "tree:8:3:4")]["kept_sources"]) <= {"model", "history"}
    markdown = (tmp_path / "bench.md").read_text()
    assert "| mamba | strict | tree:8:3:4 |" in markdown and "H200 est. ms" in markdown
    assert json.loads((tmp_path / "bench.json").read_text())["results"][2]["tree"] == "chain:2"
    with pytest.raises(SystemExit) as refused:
        decode.run(parser.parse_args(["--trees", "tree:0"]))
    assert refused.value.code == 2 and "--trees: tree shape 'tree:0'" in capsys.readouterr().err


# --- calibration and the datastore builder ---------------------------------------------------------

from spec_vla_ros.drafts.calibration import fit_temperature, teacher_forced_logits, temperature_of  # noqa: E402


def test_the_fitted_temperature_is_the_one_the_targets_were_drawn_at():
    """Targets drawn from softmax(z / T0) of logits z at the scale T0 (a head whose probabilities
    are off by the factor T0, as the packaged ones are by ~0.01): the fit lands near T0."""
    for trial, t0 in enumerate((0.01, 2.0)):
        generator = torch.Generator().manual_seed(SEED + trial)
        z = torch.randn(600, 256, generator=generator) * 2.5 * t0
        targets = torch.multinomial(torch.softmax(z / t0, dim=-1), 1, generator=generator)[:, 0]
        fitted, brier = fit_temperature(z, targets)
        assert fitted == pytest.approx(t0, rel=0.25), f"seed {SEED}, T0 {t0}"
        assert 0.0 <= brier < 2.0
    with pytest.raises(ValueError, match="needs \\[n, bins\\] logits and \\[n\\] targets"):
        fit_temperature(torch.zeros(3, 256), torch.zeros(4, dtype=torch.long))
    assert temperature_of({}) == 1.0 and temperature_of({"calibration": {"temperature": 0.01}}) == 0.01


def test_teacher_forced_logits_draft_each_token_from_the_true_states(miniature, observation, trained_drafts):
    pixels, prompt = observation
    tokens = random_tokens(fresh(7000), ACTION_DIM)
    session = VerifierSession(miniature.model)
    step = session.prefill(pixels, prompt, tokens[:ACTION_DIM - 1])
    prompt_length = session.length - (ACTION_DIM - 1)
    for kind, draft in trained_drafts.items():
        logits = teacher_forced_logits(draft, step.hidden, step.input_embeds, prompt_length, tokens)
        assert logits.shape == (ACTION_DIM - 1, 256)
        for index in (0, 3):           # the first proposal after tokens[:index + 1], committed as the decoder would
            draft.begin(step.hidden[:prompt_length], step.input_embeds[:prompt_length])
            if index:
                draft.accept(tokens[:index], step.hidden[prompt_length:prompt_length + index])
            [proposal] = draft.propose(tokens[index], 1)
            assert proposal == ACTION_TOKEN_MIN + int(logits[index].argmax()), f"seed {SEED}, {kind}, {index}"


def test_a_datastore_links_each_step_to_the_one_before_it_in_its_episode():
    from spec_vla_ros.training.datastore import linked, synthetic_range
    rows = [(7, 0, [1] * 7), (7, 1, [2] * 7), (9, 0, [3] * 7), (7, 2, [4] * 7), (9, 2, [5] * 7)]
    store = linked(rows)
    assert store.previous.tolist() == [-1, 0, -1, 1, -1]                    # (9, 2) has no step 1
    assert store.tokens[3].tolist() == [4] * 7
    assert synthetic_range("0:3000:1") == (0, 3000, 1)
    with pytest.raises(Exception, match="expected FIRST_SEED:SCENES:STEPS"):
        synthetic_range("0:0:1")
