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
