"""Speculative decoding: what strict acceptance guarantees, the relaxed rules, and OpenVLA's EOS rule.

Two kinds of verifier:
- a scripted one (test/scripted_verifier.py: exact greedy choices, no floating point), on which
  strict speculative decoding must reproduce AR exactly, for every draft and num_draft_tokens;
- the miniature, on fresh random inputs, where a pass over more positions moves float32 logits
  by ~1e-5. There the invariant is: at the first token where strict decoding differs from AR,
  AR's logits rank the two tokens within STRICT_TIE_TOLERANCE_FP32 (a near-tie). Every test
  that draws inputs prints its seed in the failure message.
"""
import os

import numpy as np
import pytest
import torch

from scripted_verifier import Script, ScriptedSession
from spec_vla_ros.decoding.acceptance import GRIPPER_POSITION, STRICT_TIE_TOLERANCE_FP32, Acceptance
from spec_vla_ros.vla.gripper import gripper_opens
from spec_vla_ros.decoding.decoder import Decoder, action_token_ids
from spec_vla_ros.decoding.noise_floor import reshaped_ar_decoder
from spec_vla_ros.drafts.base import Draft
from spec_vla_ros.drafts.registry import load_draft
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, EOS_TOKEN_ID
from sim_bridge.constants import LIBERO_GOAL_INSTRUCTIONS
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids
from spec_vla_ros.vla.session import VerifierSession

SEED = int.from_bytes(os.urandom(4), "little")
NUM_OBSERVATIONS = 8
PROMPT = list(range(100, 120))          # stands in for a tokenized prompt on the scripted verifier


def fresh(offset: int = 0) -> np.random.Generator:
    return np.random.default_rng(SEED + offset)


class ScriptedDraft(Draft):
    """Proposes the `truth` (set per action), each token replaced with probability `corrupt` by a
    random one within `spread` ids (or anywhere, including non-action ids); `past_eos` extra
    proposals after the end of the truth (junk a draft might guess after an EOS)."""

    name = "scripted"

    def __init__(self, corrupt: float, spread: int | None = None, early: bool = False, seed: int = 0,
                 past_eos: bool = False):
        self.corrupt, self.spread, self.early, self.past_eos = corrupt, spread, early, past_eos
        self.rng = np.random.default_rng(seed)
        self.truth: list[int] = []
        self.produced = 0

    def _guess(self, position: int) -> int:
        if position >= len(self.truth):
            return int(self.rng.integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1))
        right = self.truth[position]
        if self.rng.random() >= self.corrupt:
            return right
        if self.spread is None:
            return int(self.rng.integers(0, ACTION_TOKEN_MAX + 1))
        guess = right + self.rng.integers(-self.spread, self.spread + 1)
        return int(np.clip(guess, ACTION_TOKEN_MIN, ACTION_TOKEN_MAX))

    def _limit(self) -> int:
        return ACTION_DIM if self.past_eos else len(self.truth)

    def propose_early(self, k):
        self.produced = 0
        return [self._guess(i) for i in range(min(k, self._limit()))] if self.early else []

    def begin(self, hidden, input_embeds):
        self.produced = 0

    def propose(self, next_token, k):
        start = self.produced + 1
        return [self._guess(i) for i in range(start, min(start + k, self._limit()))]

    def accept(self, tokens, hidden):
        self.produced += len(tokens)


def openvla_action_ids(prompt: list[int], generated: list[int]) -> list[int]:
    """OpenVLA's predict_action: generated_ids[0, -7:] of prompt + output."""
    return (prompt + generated)[-ACTION_DIM:]


# --- the scripted verifier: exact --------------------------------------------------------------

def random_truths(rng: np.random.Generator, count: int) -> list[list[int]]:
    """Action-token answers; about a third stop with an EOS at a random position."""
    truths = []
    for _ in range(count):
        truth = rng.integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, ACTION_DIM).tolist()
        if rng.random() < 0.35:
            eos_at = int(rng.integers(0, ACTION_DIM))
            truth = truth[:eos_at] + [EOS_TOKEN_ID]
        truths.append(truth)
    return truths


def scripted_decode(model, draft, k, acceptance, truths, seed=0):
    """Decode each truth as one action of one episode on a ScriptedSession."""
    current = []
    decoder = Decoder(model, draft, k, acceptance,
                      session_factory=lambda: ScriptedSession(Script(current[0]), model.hidden_size, seed=seed))
    outputs = []
    for truth in truths:
        current[:] = [truth]
        if isinstance(draft, ScriptedDraft):
            draft.truth = truth
        outputs.append(decoder.decode(None, PROMPT))
    return outputs


@pytest.fixture(scope="module")
def trained_drafts(miniature):
    return {name: load_draft(name, "", miniature) for name in ("mamba", "llama")}


def carrying_head_draft(model):
    from spec_vla_ros.drafts.eagle_head import EagleDraft, EagleHead, default_core_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = EagleHead("mamba", default_core_config("mamba", model), context=16, carry=True).eval()
    return EagleDraft(head, model)


def all_drafts(miniature, trained_drafts, k):
    return {"random": ScriptedDraft(corrupt=1.0, seed=SEED + k), "oracle": ScriptedDraft(corrupt=0.0),
            "oracle-past-eos": ScriptedDraft(corrupt=0.0, early=True, past_eos=True, seed=SEED),
            "noisy-early": ScriptedDraft(corrupt=0.3, spread=4, early=True, seed=SEED + k),
            **trained_drafts, "history": load_draft("history", "", miniature),
            "carrying-mamba": carrying_head_draft(miniature.model)}


@pytest.mark.parametrize("k", range(1, ACTION_DIM + 1))
def test_strict_reproduces_ar_exactly_on_a_scripted_verifier(miniature, trained_drafts, k):
    """Without floating-point noise in the verifier, strict speculative decoding is AR, EOS included."""
    truths = random_truths(fresh(k), 24)
    ar = scripted_decode(miniature.model, None, k, Acceptance(0), truths)
    for (tokens, stats), truth in zip(ar, truths):
        assert stats.generated == truth and tokens == openvla_action_ids(PROMPT, truth), f"seed {SEED}"
        assert stats.verifier_passes == len(truth) and stats.stopped_at_eos == (truth[-1] == EOS_TOKEN_ID)
    for name, draft in all_drafts(miniature, trained_drafts, k).items():
        outputs = scripted_decode(miniature.model, draft, k, Acceptance(0), truths)
        for (tokens, stats), (ar_tokens, ar_stats), truth in zip(outputs, ar, truths):
            message = f"seed {SEED}, draft {name}, k {k}, truth {truth}"
            assert tokens == ar_tokens and stats.generated == ar_stats.generated, message
            assert stats.verifier_passes == len(stats.accepted_per_pass), message
            assert all(a <= p <= k or (i == 0 and p <= ACTION_DIM)
                       for i, (a, p) in enumerate(zip(stats.accepted_per_pass, stats.proposed_per_pass))), message
            kept = sum(stats.accepted_per_pass)      # each pass adds its kept proposals and at most one own token
            assert kept <= len(stats.generated) <= kept + stats.verifier_passes, message
        if name == "oracle":      # always right, no early guesses: k + 1 tokens per pass after the prefill
            for (_, stats), truth in zip(outputs, truths):
                assert stats.verifier_passes == 1 + -(-(len(truth) - 1) // (k + 1)), f"seed {SEED}, {truth}"


def test_an_oracle_proposing_early_needs_exactly_one_pass(miniature):
    truths = random_truths(fresh(100), 16)
    for (tokens, stats), truth in zip(scripted_decode(miniature.model, ScriptedDraft(0.0, early=True), 4,
                                                      Acceptance(0), truths), truths):
        assert stats.verifier_passes == 1 and stats.accepted_per_pass == [len(truth)], f"seed {SEED}, {truth}"
        assert stats.acceptance_length == len(truth)


@pytest.mark.parametrize("eos_at", range(ACTION_DIM))
def test_an_eos_from_the_verifier_ends_the_action_as_openvla_reads_it(miniature, trained_drafts, eos_at):
    """The verifier's argmax is EOS at token `eos_at`: AR stops there, the action is the last 7 ids
    of prompt + output (prompt ids first), and every draft gives the same, whatever it proposes
    after the EOS."""
    rng = fresh(200 + eos_at)
    truth = rng.integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, eos_at).tolist() + [EOS_TOKEN_ID]
    expected = PROMPT[len(PROMPT) - (ACTION_DIM - 1 - eos_at):] + truth            # written out, not sliced
    assert len(expected) == ACTION_DIM and expected[-1] == EOS_TOKEN_ID
    drafts = {"ar": None, **all_drafts(miniature, trained_drafts, 3)}
    for name, draft in drafts.items():
        for k in (1, 3, 6):
            [(tokens, stats)] = scripted_decode(miniature.model, draft, k, Acceptance(0), [truth])
            message = f"seed {SEED}, draft {name}, k {k}, EOS at {eos_at}"
            assert tokens == expected and stats.tokens == expected, message
            assert stats.generated == truth and stats.stopped_at_eos, message
            if name == "ar":
                assert stats.verifier_passes == eos_at + 1, message


def test_the_policy_reads_an_early_eos_action_with_openvlas_formula(miniature):
    """The miniature's own verifier, with EOS forced as the argmax at token 3 (logits replaced by a
    wrapper session): the action equals OpenVLA's predict_action computed here from its formula."""
    from spec_vla_ros.policy import PolicyConfig, VLAPolicy
    from spec_vla_ros.vla.constants import BIN_EDGES, LIBERO_GOAL_MASK, LIBERO_GOAL_Q01, LIBERO_GOAL_Q99
    eos_at = 3
    policy = VLAPolicy(PolicyConfig(draft="ar"))

    class ForcedEOS(VerifierSession):
        """AR's pass n predicts token n - 1: make EOS its argmax in pass eos_at + 1."""

        def _forward(self, embeds, num_logits):
            step = super()._forward(embeds, num_logits)
            if self.passes - 1 == eos_at:
                step.logits[-1, EOS_TOKEN_ID] = step.logits[-1].max() + 1.0
            return step

    policy.set_decoder(Decoder(policy.verifier.model, session_factory=lambda: ForcedEOS(policy.verifier.model)),
                       policy.config)
    image = fresh(300).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    instruction = "put the bowl on the plate"
    action, stats = policy.act(image, instruction)
    prompt = prompt_token_ids(policy.verifier.tokenizer, instruction)
    assert stats.stopped_at_eos and len(stats.generated) == eos_at + 1 and stats.verifier_passes == eos_at + 1

    # OpenVLA (modeling_prismatic.py predict_action), step by step:
    generated_ids = prompt + stats.generated
    predicted = np.array(generated_ids[-ACTION_DIM:])
    discretized = np.clip(32000 - predicted - 1, a_min=0, a_max=254)
    bin_centers = (BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2.0
    normalized = bin_centers[discretized]
    high, low = np.array(LIBERO_GOAL_Q99), np.array(LIBERO_GOAL_Q01)
    expected = np.where(LIBERO_GOAL_MASK, 0.5 * (normalized + 1) * (high - low) + low, normalized)
    assert predicted[:ACTION_DIM - 1 - eos_at].tolist() == prompt[-(ACTION_DIM - 1 - eos_at):]
    np.testing.assert_allclose(action, expected, rtol=0, atol=1e-12)
    assert action[-1] == pytest.approx(bin_centers[254])          # the EOS itself, as the gripper


# --- relaxed rules: from their formulas ----------------------------------------------------------

def test_relaxed_rules_follow_their_formulas():
    """relaxed: Spec-VLA's evaluate_posterior, |draft - verifier| <= T and nothing else.
    relaxed-guarded: that, and both action tokens, and the gripper on the verifier's side."""
    rng = fresh(400)
    ids = np.concatenate([rng.integers(ACTION_TOKEN_MIN - 20, ACTION_TOKEN_MAX + 30, 3000),
                          rng.integers(0, 12, 200), [31808, 31809, 31743, 31744, 31999, 32000]])
    for threshold in (0, 1, 3, 9, 40):
        relaxed = Acceptance.from_name("relaxed", threshold)
        guarded = Acceptance.from_name("relaxed-guarded", threshold)
        for _ in range(4000):
            draft, verifier = (int(x) for x in rng.choice(ids, 2))
            if rng.random() < 0.3:
                verifier = int(np.clip(draft + rng.integers(-threshold - 2, threshold + 3), 0, 32063))
            position = int(rng.integers(0, ACTION_DIM))
            close = abs(draft - verifier) <= threshold
            in_range = all(ACTION_TOKEN_MIN <= t <= ACTION_TOKEN_MAX for t in (draft, verifier))
            center = lambda token: -1 + (2 * min(max(31999 - token, 0), 254) + 1) / 255    # OpenVLA's bin center
            same_side = position != GRIPPER_POSITION or (center(draft) > 0.5) == (center(verifier) > 0.5)
            message = f"seed {SEED}: draft {draft}, verifier {verifier}, position {position}, T {threshold}"
            assert relaxed.accepts(draft, verifier, position) == close, message
            assert guarded.accepts(draft, verifier, position) == (draft == verifier or
                                                                  (close and in_range and same_side)), message


def test_rule_names_and_threshold_zero():
    assert Acceptance.from_name("relaxed", 9).name == "relaxed:9"
    assert Acceptance.from_name("relaxed-guarded", 9).name == "relaxed-guarded:9"
    assert Acceptance.from_name("relaxed", 0) == Acceptance.from_name("relaxed-guarded", 0) == Acceptance(0)
    assert Acceptance.from_name("relaxed-guarded", 0).name == "strict"
    assert Acceptance.from_name("relaxed", 9) != Acceptance.from_name("relaxed-guarded", 9)
    with pytest.raises(ValueError, match="expected one of strict, relaxed, relaxed-guarded"):
        Acceptance.from_name("loose", 9)


def test_relaxed_keeps_the_draft_token_where_guarded_takes_the_verifiers(miniature):
    """On a scripted verifier answering (whatever the prefix) a non-action id (31740) at token 2
    and an open gripper (31808, value 0.502) at token 6, draft tokens 5 and 4 ids away are kept
    by Spec-VLA's rule and replaced by the verifier's under the guarded rule."""
    truth = [31900, 31901, 31740, 31903, 31904, 31905, 31808]
    guesses = [31900, 31901, 31745, 31903, 31904, 31905, 31812]       # 31812: gripper 0.471, closes

    class Fixed(Draft):
        name = "fixed"

        def propose_early(self, k):
            return guesses[:k]

        def propose(self, next_token, k):
            return []

    def decode(rule):
        decoder = Decoder(miniature.model, Fixed(), 4, Acceptance.from_name(rule, 9), session_factory=lambda:
                          ScriptedSession(Script(truth, positional=True), miniature.model.hidden_size))
        return decoder.decode(None, PROMPT)[1]

    relaxed, guarded = decode("relaxed"), decode("relaxed-guarded")
    assert relaxed.generated == guesses and relaxed.verifier_passes == 1
    # guarded: 31745 against 31740 (not an action token) fails, the verifier's 31740 is taken, and
    # each later token comes from its own pass (the draft proposes nothing after the prefill)
    assert guarded.generated == truth and guarded.accepted_per_pass == [2, 0, 0, 0, 0]
    assert not gripper_opens(31812) and gripper_opens(31808)


def test_gripper_boundary_is_never_crossed_by_the_guarded_rule():
    """Tokens 31809 (gripper 0.494, closes) and 31808 (0.502, opens) sit across the boundary."""
    assert not gripper_opens(31809) and gripper_opens(31808)
    guarded, relaxed = Acceptance(9, guarded=True), Acceptance(9)
    assert guarded.accepts(31808, 31812, position=0)            # pose dims: only the distance counts
    assert not guarded.accepts(31808, 31812, position=GRIPPER_POSITION)
    assert relaxed.accepts(31808, 31812, position=GRIPPER_POSITION)      # Spec-VLA: the distance only
    assert guarded.accepts(31800, 31808, position=GRIPPER_POSITION)
    assert guarded.accepted_prefix([31808, 31808], [31812, 31812], start=GRIPPER_POSITION - 1) == 1
    assert relaxed.accepted_prefix([31808, 31808], [31812, 31812], start=GRIPPER_POSITION - 1) == 2


# --- the miniature: fresh inputs, near-ties ------------------------------------------------------

class RecordingSession(VerifierSession):
    """A VerifierSession that keeps the logits row of every generated position (AR: one per pass)."""

    def __init__(self, model, rows: list):
        super().__init__(model)
        self.rows = rows

    def _forward(self, embeds, num_logits):
        step = super()._forward(embeds, num_logits)
        self.rows.append(step.logits[-1].clone())
        return step


@pytest.fixture(scope="module")
def observations(miniature):
    """(pixel values, prompt ids, AR generated tokens, AR logits rows) for fresh random images and
    instructions, as one episode."""
    rng = fresh(500)
    result = []
    for _ in range(NUM_OBSERVATIONS):
        size = int(rng.integers(64, 300))
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        words = " ".join(rng.choice(["the", "bowl", "plate", "stove", "open", "drawer", "put", "on"], 3))
        instruction = f"{LIBERO_GOAL_INSTRUCTIONS[int(rng.integers(0, 10))]} {words}"
        pixels, prompt = pixel_values(image), prompt_token_ids(miniature.tokenizer, instruction)
        rows = []
        _, stats = Decoder(miniature.model, session_factory=lambda: RecordingSession(miniature.model, rows)).decode(
            pixels, prompt)
        result.append((pixels, prompt, stats.generated, torch.stack(rows)))
    return result


def assert_ar_up_to_near_ties(generated, ar_generated, ar_rows, message):
    """At the first token where `generated` leaves AR's, AR's logits put the two within the tolerance."""
    for position, (mine, theirs) in enumerate(zip(generated, ar_generated)):
        if mine != theirs:
            gap = float(ar_rows[position, theirs] - ar_rows[position, mine])
            assert 0 <= gap <= STRICT_TIE_TOLERANCE_FP32, \
                f"{message}: token {position} is {mine}, AR's {theirs}, AR logit gap {gap:.3g} > tolerance"
            return position
    assert len(generated) == len(ar_generated), message
    return None


def decode_all(model, draft, k, acceptance, observations):
    decoder = Decoder(model, draft, k, acceptance)
    outputs = []
    for pixels, prompt, truth, _ in observations:
        if isinstance(draft, ScriptedDraft):
            draft.truth = truth
        outputs.append(decoder.decode(pixels, prompt))
    return outputs


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_strict_gives_ar_tokens_except_at_near_ties(miniature, observations, trained_drafts, k):
    """The lossless claim as it holds in float32: every draft, fresh inputs."""
    drafts = {**trained_drafts, "history": load_draft("history", "", miniature),
              "carrying-mamba": carrying_head_draft(miniature.model),
              "noisy-early": ScriptedDraft(corrupt=0.3, spread=4, early=True, seed=SEED + k)}
    for name, draft in drafts.items():
        outputs = decode_all(miniature.model, draft, k, Acceptance(0), observations)
        for index, ((tokens, stats), (_, prompt, ar_generated, ar_rows)) in enumerate(zip(outputs, observations)):
            message = f"seed {SEED}, draft {name}, k {k}, observation {index}"
            assert_ar_up_to_near_ties(stats.generated, ar_generated, ar_rows, message)
            assert tokens == action_token_ids(prompt, stats.generated), message


def test_ar_with_reshaped_passes_is_ar_up_to_near_ties(miniature, observations):
    """The noise-floor decoder: every pass one position longer than AR's, the extra row discarded."""
    for index, (pixels, prompt, ar_generated, ar_rows) in enumerate(observations):
        _, stats = reshaped_ar_decoder(miniature.model).decode(pixels, prompt)
        assert stats.proposed_per_pass == [1] * (len(stats.generated) - 1) + [0], f"seed {SEED}"
        assert_ar_up_to_near_ties(stats.generated, ar_generated, ar_rows, f"seed {SEED}, observation {index}")


def test_the_reshaped_ar_is_exactly_ar_on_a_scripted_verifier(miniature):
    truths = random_truths(fresh(600), 24)
    current = []
    decoder = reshaped_ar_decoder(miniature.model, session_factory=lambda: ScriptedSession(
        Script(current[0]), miniature.model.hidden_size))
    for truth in truths:
        current[:] = [truth]
        assert decoder.decode(None, PROMPT)[1].generated == truth, f"seed {SEED}"


def test_relaxed_threshold_zero_is_strict(miniature, observations, trained_drafts):
    """Same rule, same pass shapes: identical, not merely near."""
    for make_draft in [lambda: ScriptedDraft(0.5, spread=3, seed=SEED), lambda: trained_drafts["mamba"]]:
        strict = decode_all(miniature.model, make_draft(), 3, Acceptance.from_name("strict"), observations)
        for rule in ("relaxed", "relaxed-guarded"):
            relaxed = decode_all(miniature.model, make_draft(), 3, Acceptance.from_name(rule, 0), observations)
            assert [(t, s.accepted_per_pass) for t, s in strict] == [(t, s.accepted_per_pass) for t, s in relaxed], \
                f"seed {SEED}, {rule}"


def test_a_carrying_draft_guesses_each_action_after_the_first_of_an_episode(miniature, observations):
    """A head trained with --carry proposes all 7 tokens before the prefill, from the state the
    previous action left; nothing at the start of an episode."""
    decoder = Decoder(miniature.model, carrying_head_draft(miniature.model), 4, Acceptance(0))
    early = []
    for index, (pixels, prompt, ar_generated, ar_rows) in enumerate(observations[:4]):
        if index == 2:
            decoder.reset_episode()
        _, stats = decoder.decode(pixels, prompt)
        assert_ar_up_to_near_ties(stats.generated, ar_generated, ar_rows, f"seed {SEED}, observation {index}")
        early.append(stats.proposed_per_pass[0])
    assert early == [0, ACTION_DIM, 0, ACTION_DIM]


class RecordingAcceptance(Acceptance):
    """Records every non-identical (draft, verifier, position) triple it accepts."""

    def accepts(self, draft_token, verifier_token, position=None):
        accepted = super().accepts(draft_token, verifier_token, position)
        if accepted and draft_token != verifier_token:
            ACCEPTED.append((draft_token, verifier_token, position))
        return accepted


ACCEPTED: list = []


@pytest.mark.parametrize("threshold", [3, 9])
@pytest.mark.parametrize("guarded", [False, True])
def test_relaxed_stays_within_threshold_and_guarded_never_flips_the_gripper(miniature, observations, threshold,
                                                                          guarded):
    ACCEPTED.clear()
    draft = ScriptedDraft(corrupt=0.6, spread=2 * threshold, early=True, seed=SEED + threshold)
    outputs = decode_all(miniature.model, draft, 4, RecordingAcceptance(threshold, guarded), observations)
    assert ACCEPTED, f"seed {SEED}: the scripted draft should have had inexact tokens accepted"
    for draft_token, verifier_token, position in ACCEPTED:
        assert abs(draft_token - verifier_token) <= threshold, f"seed {SEED}"
        if guarded and position == GRIPPER_POSITION:
            assert gripper_opens(draft_token) == gripper_opens(verifier_token), f"seed {SEED}"
    for tokens, stats in outputs:
        assert len(tokens) == ACTION_DIM and stats.verifier_passes <= ACTION_DIM


# --- benchmarks ----------------------------------------------------------------------------------

def test_decode_benchmark_reports_ar_its_noise_floor_and_drafts(tmp_path, miniature):
    import argparse
    import json

    from spec_vla_ros.commands.benchmarks import decode
    parser = argparse.ArgumentParser()
    decode.add_arguments(parser)
    args = parser.parse_args(["--drafts", "history", "mamba", "--thresholds", "0", "9", "--num-draft-tokens", "2",
                              "--trees", "chain", "--relaxed-rules", "relaxed", "relaxed-guarded", "--episodes", "1",
                              "--steps-per-episode", "3", "--warmup", "0", "--seed", str(SEED % 10**6),
                              "--json", str(tmp_path / "bench.json"), "--markdown", str(tmp_path / "bench.md")])
    output = decode.run(args)
    results = {(r["draft"], r["acceptance"]): r for r in output["results"]}
    assert results[("ar", "strict")]["passes_per_action"] == ACTION_DIM
    assert results[("ar", "strict")]["same_as_ar"] == 1.0 and results[("ar", "strict")]["num_draft_tokens"] == 0
    assert results[("mamba", "relaxed:9")]["num_draft_tokens"] == 2
    floor = results[("ar-reshaped", "strict")]
    assert floor["profiles"][0]["proposed_per_pass"][0] == 1 and output["ar_noise_floor"] == floor["same_as_ar"]
    # Strict decoding (and AR with reshaped passes) gives AR's action on every observation where AR's
    # top-2 margin exceeds the tolerance at each token: at least that share is "same as AR" (all of it
    # when no observation has a near-tie). A row whose bins differ from AR's is not 100 % the same.
    from spec_vla_ros.benchmarks.decode import observations as benchmark_observations
    tie_free = []
    for _, instruction, frame in benchmark_observations(1, 3, SEED % 10**6):
        rows = []
        Decoder(miniature.model, session_factory=lambda: RecordingSession(miniature.model, rows)).decode(
            pixel_values(frame, True, miniature.image_normalization),
            prompt_token_ids(miniature.tokenizer, instruction))
        top = torch.stack(rows).topk(2, dim=-1).values
        tie_free.append(bool((top[:, 0] - top[:, 1] > STRICT_TIE_TOLERANCE_FP32).all()))
    for name in ("ar-reshaped", "history", "mamba"):
        assert results[(name, "strict")]["same_as_ar"] >= sum(tie_free) / 3, f"seed {SEED}, {name}: {tie_free}"
    for (name, rule), result in results.items():
        assert result["same_as_ar"] < 1.0 or not any(result["max_abs_dbin"].values()), f"seed {SEED}, {name} {rule}"
    for name in ("history", "mamba"):
        assert results[(name, "relaxed:9")]["actions"] == results[(name, "relaxed-guarded:9")]["actions"] == 3
    assert json.loads((tmp_path / "bench.json").read_text())["observations"] == 3
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.split("AR noise floor")[0].count("\n| ") == len(output["results"])
    assert "relaxed-guarded:9" in markdown and "same as AR" in markdown
    split = output["split"]["split"]                          # this machine's split beside OpenVLA-7B's
    assert split["pass_1"] == 1.0 and split["prefill"] > 1.0 and 0.0 < split["mamba_step"] < split["prefill"]
    assert "| prefill |" in markdown and "H200" in markdown and "measured / roofline" in markdown


def test_full_size_benchmark_refuses_cpu_and_builds_in_place():
    from spec_vla_ros.benchmarks import decode
    from spec_vla_ros.vla.miniature import miniature_config
    with pytest.raises(SystemExit, match="CUDA"):
        decode.check_architecture_device("cpu", force=False)
    model = decode.build_random_architecture(miniature_config(), "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
    timing = decode.time_architecture(model, "cpu", repeats=1, prompt_tokens=8)
    assert sorted(timing["pass_ms"]) == list(range(1, ACTION_DIM + 1)) and set(timing["draft"]) == {"mamba", "llama"}
    ar = {"draft": "ar", "profiles": [{"passes": ACTION_DIM, "proposed_per_pass": []}]}
    assert decode.project(ar, timing) == pytest.approx(timing["prefill_ms"] + 6 * timing["pass_ms"][1])
    one_pass = {"draft": "history", "profiles": [{"passes": 1, "proposed_per_pass": [ACTION_DIM]}]}
    assert decode.project(one_pass, timing) == pytest.approx(timing["prefill_ms"])
    carried = {"draft": "mamba", "profiles": [{"passes": 1, "proposed_per_pass": [ACTION_DIM]}]}
    mamba = timing["draft"]["mamba"]
    assert decode.project(carried, timing) == pytest.approx(
        timing["prefill_ms"] + mamba["begin_ms"] + ACTION_DIM * mamba["step_ms"])


def test_decode_benchmark_reads_both_checkpoint_spellings_in_one_place(tmp_path):
    import argparse

    from spec_vla_ros.commands.benchmarks import decode
    from spec_vla_ros.drafts.registry import PACKAGED_CHECKPOINTS
    from spec_vla_ros.training.arguments import CommandError
    parser = argparse.ArgumentParser()
    decode.add_arguments(parser)
    drafts = str(PACKAGED_CHECKPOINTS)                    # a directory of drafts, one per kind
    old = decode.drafts_to_run(parser.parse_args(["--drafts", "mamba", "history", "--mamba-checkpoint", drafts]))
    new = decode.drafts_to_run(parser.parse_args(["--drafts", "mamba", "history", "--checkpoint",
                                                     f"mamba={drafts}"]))
    assert old == new and [(d.kind, d.directory) for d in new] == [("mamba", PACKAGED_CHECKPOINTS / "mamba"),
                                                                    ("history", None)]
    with pytest.raises(CommandError, match="two checkpoints for llama"):
        decode.drafts_to_run(parser.parse_args(["--llama-checkpoint", drafts, "--checkpoint",
                                                   f"llama={tmp_path}"]))
