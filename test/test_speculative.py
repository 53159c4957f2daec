"""Speculative decoding is exact under strict acceptance, for any draft, and bounded under relaxed."""
import numpy as np
import pytest

from spec_vla_ros.decoding.acceptance import GRIPPER_POSITION, Acceptance, gripper_opens
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.drafts.base import Draft
from spec_vla_ros.drafts.registry import load_draft
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, LIBERO_GOAL_INSTRUCTIONS
from spec_vla_ros.vla.preprocess import pixel_values
from spec_vla_ros.vla.prompt import prompt_token_ids

NUM_OBSERVATIONS = 8


class ScriptedDraft(Draft):
    """Proposes the AR answer (`truth`, set per observation), each token replaced with probability
    `corrupt` by a random one within `spread` bins (or anywhere, including non-action ids)."""

    name = "scripted"

    def __init__(self, corrupt: float, spread: int | None = None, early: bool = False, seed: int = 0):
        self.corrupt, self.spread, self.early = corrupt, spread, early
        self.rng = np.random.default_rng(seed)
        self.truth: list[int] = []
        self.produced = 0

    def _guess(self, position: int) -> int:
        right = self.truth[position]
        if self.rng.random() >= self.corrupt:
            return right
        if self.spread is None:
            return int(self.rng.integers(0, ACTION_TOKEN_MAX + 1))
        guess = right + self.rng.integers(-self.spread, self.spread + 1)
        return int(np.clip(guess, ACTION_TOKEN_MIN, ACTION_TOKEN_MAX))

    def propose_early(self, k):
        self.produced = 0
        return [self._guess(i) for i in range(k)] if self.early else []

    def begin(self, hidden, input_embeds):
        self.produced = 0

    def propose(self, next_token, k):
        start = self.produced + 1
        return [self._guess(i) for i in range(start, min(start + k, ACTION_DIM))]

    def accept(self, tokens, hidden):
        self.produced += len(tokens)


class RecordingAcceptance(Acceptance):
    """Records every non-identical (draft, verifier, position) triple it accepts."""

    def accepts(self, draft_token, verifier_token, position=None):
        accepted = super().accepts(draft_token, verifier_token, position)
        if accepted and draft_token != verifier_token:
            ACCEPTED.append((draft_token, verifier_token, position))
        return accepted


ACCEPTED: list = []


@pytest.fixture(scope="module")
def observations(miniature):
    """(pixel values, prompt ids, AR tokens) for random images and LIBERO-GOAL instructions."""
    rng = np.random.default_rng(7)
    ar = Decoder(miniature.model)
    result = []
    for index in range(NUM_OBSERVATIONS):
        size = int(rng.integers(64, 300))
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        pixels = pixel_values(image)
        prompt = prompt_token_ids(miniature.tokenizer, LIBERO_GOAL_INSTRUCTIONS[index % len(LIBERO_GOAL_INSTRUCTIONS)])
        result.append((pixels, prompt, ar.decode(pixels, prompt)[0]))
    return result


@pytest.fixture(scope="module")
def trained_drafts(miniature):
    return {name: load_draft(name, "", miniature) for name in ("mamba", "llama")}


def decode_all(model, draft, k, acceptance, observations):
    decoder = Decoder(model, draft, k, acceptance)
    outputs = []
    for pixels, prompt, truth in observations:
        if isinstance(draft, ScriptedDraft):
            draft.truth = truth
        outputs.append(decoder.decode(pixels, prompt))
    return outputs


@pytest.mark.parametrize("k", range(1, ACTION_DIM + 1))
def test_strict_equals_autoregressive_for_every_draft(miniature, observations, trained_drafts, k):
    drafts = {"random": ScriptedDraft(corrupt=1.0, seed=k), "oracle": ScriptedDraft(corrupt=0.0),
              "noisy-early": ScriptedDraft(corrupt=0.3, spread=4, early=True, seed=k),
              **trained_drafts, "history": load_draft("history", "", miniature)}
    for name, draft in drafts.items():
        outputs = decode_all(miniature.model, draft, k, Acceptance(0), observations)
        for (tokens, stats), (_, _, truth) in zip(outputs, observations):
            assert tokens == truth, (name, k)
            assert stats.verifier_passes == len(stats.accepted_per_pass)
            assert all(a <= p <= k or (i == 0 and p <= ACTION_DIM)
                       for i, (a, p) in enumerate(zip(stats.accepted_per_pass, stats.proposed_per_pass)))
        if name == "oracle":       # always right, no early guesses: k + 1 tokens per pass after the prefill
            assert {stats.verifier_passes for _, stats in outputs} == {1 + -(-(ACTION_DIM - 1) // (k + 1))}


def test_oracle_proposing_early_needs_exactly_one_pass(miniature, observations):
    for tokens, stats in decode_all(miniature.model, ScriptedDraft(0.0, early=True), 4, Acceptance(0), observations):
        assert stats.verifier_passes == 1 and stats.accepted_per_pass == [ACTION_DIM]
        assert stats.acceptance_length == ACTION_DIM


def test_relaxed_threshold_zero_is_strict(miniature, observations, trained_drafts):
    for make_draft in [lambda: ScriptedDraft(0.5, spread=3, seed=1), lambda: trained_drafts["mamba"]]:
        strict = decode_all(miniature.model, make_draft(), 3, Acceptance.from_name("strict"), observations)
        relaxed = decode_all(miniature.model, make_draft(), 3, Acceptance.from_name("relaxed", 0), observations)
        assert [(t, s.accepted_per_pass) for t, s in strict] == [(t, s.accepted_per_pass) for t, s in relaxed]


def test_a_carrying_draft_guesses_each_action_after_the_first_of_an_episode(miniature, observations):
    """A head trained with --carry proposes all 7 tokens before the prefill, from the state the
    previous action left; nothing at the start of an episode. Strict decoding stays exact."""
    import torch

    from spec_vla_ros.drafts.eagle_head import EagleDraft, EagleHead, default_core_config
    torch.manual_seed(0)
    head = EagleHead("mamba", default_core_config("mamba", miniature.model), context=16, carry=True).eval()
    decoder = Decoder(miniature.model, EagleDraft(head, miniature.model), 4, Acceptance(0))
    early = []
    for index, (pixels, prompt, truth) in enumerate(observations[:4]):
        if index == 2:
            decoder.reset_episode()
        tokens, stats = decoder.decode(pixels, prompt)
        assert tokens == truth
        early.append(stats.proposed_per_pass[0])
    assert early == [0, ACTION_DIM, 0, ACTION_DIM]


@pytest.mark.parametrize("threshold", [3, 9])
def test_relaxed_stays_within_threshold_and_never_flips_the_gripper(miniature, observations, threshold):
    ACCEPTED.clear()
    draft = ScriptedDraft(corrupt=0.6, spread=2 * threshold, early=True, seed=threshold)
    outputs = decode_all(miniature.model, draft, 4, RecordingAcceptance(threshold), observations)
    assert ACCEPTED, "the scripted draft should have had inexact tokens accepted"
    for draft_token, verifier_token, position in ACCEPTED:
        assert abs(draft_token - verifier_token) <= threshold
        if position == GRIPPER_POSITION:
            assert gripper_opens(draft_token) == gripper_opens(verifier_token)
    for (tokens, stats), (_, _, truth) in zip(outputs, observations):
        assert len(tokens) == ACTION_DIM and stats.verifier_passes <= ACTION_DIM


def test_gripper_boundary_is_never_crossed():
    """Tokens 31809 (gripper 0.494, closes) and 31808 (0.502, opens) sit across the boundary."""
    assert not gripper_opens(31809) and gripper_opens(31808)
    relaxed = Acceptance(9)
    assert relaxed.accepts(31808, 31812, position=0)            # pose dims: only the distance counts
    assert not relaxed.accepts(31808, 31812, position=GRIPPER_POSITION)
    assert relaxed.accepts(31800, 31808, position=GRIPPER_POSITION)
    assert relaxed.accepted_prefix([31808, 31808], [31812, 31812], start=GRIPPER_POSITION - 1) == 1


def test_decode_benchmark_reports_ar_and_drafts(tmp_path):
    from spec_vla_ros.decoding import benchmark
    parser = benchmark.argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    args = parser.parse_args(["--drafts", "history", "mamba", "--thresholds", "0", "9", "--num-draft-tokens", "2",
                              "--episodes", "1", "--steps-per-episode", "3", "--warmup", "0",
                              "--json", str(tmp_path / "bench.json"), "--markdown", str(tmp_path / "bench.md")])
    output = benchmark.run(args)
    results = {(r["draft"], r["acceptance"]): r for r in output["results"]}
    assert results[("none", "strict")]["passes_per_action"] == ACTION_DIM
    for name in ("history", "mamba"):
        assert set(results[(name, "strict")]["max_abs_dbin"].values()) == {0}     # strict: exactly AR
        assert results[(name, "relaxed:9")]["actions"] == 3
    assert benchmark.json.loads((tmp_path / "bench.json").read_text())["observations"] == 3
    assert (tmp_path / "bench.md").read_text().count("\n| ") == len(output["results"])


def test_full_size_benchmark_refuses_cpu_and_builds_in_place():
    import torch
    from spec_vla_ros.decoding import benchmark
    from spec_vla_ros.vla.checkpoint import miniature_config
    with pytest.raises(SystemExit, match="CUDA"):
        benchmark.check_architecture_device("cpu", force=False)
    model = benchmark.build_random_architecture(miniature_config(), "cpu", torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
    timing = benchmark.time_architecture(model, "cpu", repeats=1, prompt_tokens=8)
    assert sorted(timing["pass_ms"]) == list(range(1, ACTION_DIM + 1)) and set(timing["draft"]) == {"mamba", "llama"}
    ar = {"draft": "none", "profiles": [{"passes": ACTION_DIM, "proposed_per_pass": []}]}
    assert benchmark.project(ar, timing) == pytest.approx(timing["prefill_ms"] + 6 * timing["pass_ms"][1])
    one_pass = {"draft": "history", "profiles": [{"passes": 1, "proposed_per_pass": [ACTION_DIM]}]}
    assert benchmark.project(one_pass, timing) == pytest.approx(timing["prefill_ms"])
    carried = {"draft": "mamba", "profiles": [{"passes": 1, "proposed_per_pass": [ACTION_DIM]}]}
    mamba = timing["draft"]["mamba"]
    assert benchmark.project(carried, timing) == pytest.approx(
        timing["prefill_ms"] + mamba["begin_ms"] + ACTION_DIM * mamba["step_ms"])
