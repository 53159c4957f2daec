"""spec-vla-eval: configuration names, the resumable episode log, and (simulator) the report,
AR's noise floor beside strict speculative decoding, and resuming an interrupted run.

The sim tests share one small env (64 x 64 agentview, a few steps per episode) and one policy:
creating a LIBERO env costs ~10 s and each reset ~7 s on 2 cores.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spec_vla_ros.analysis import evaluate
from spec_vla_ros.analysis.evaluate import EpisodeLog, check_settings, run_evaluation
from spec_vla_ros.analysis.plots import FIGURE_PIXELS
from spec_vla_ros.commands import eval as eval_command
from spec_vla_ros.decoding.spec import DecoderSpec
from spec_vla_ros.vla.constants import ACTION_DIM
from spec_vla_ros.decoding.acceptance import DEFAULT_RELAXED_THRESHOLD, STRICT_TIE_TOLERANCE_FP32
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.vla.session import VerifierSession

MAX_STEPS = 4


# --- no simulator -------------------------------------------------------------------------

@pytest.mark.parametrize("text, draft, threshold, rule, name", [
    ("ar", "ar", 0, "strict", "ar"),
    ("mamba", "mamba", 0, "strict", "mamba"),
    ("llama:strict", "llama", 0, "strict", "llama"),
    ("history:relaxed", "history", DEFAULT_RELAXED_THRESHOLD, "relaxed", f"history:relaxed:{DEFAULT_RELAXED_THRESHOLD}"),
    ("Mamba:relaxed:3", "mamba", 3, "relaxed", "mamba:relaxed:3"),
    ("mamba:relaxed:0", "mamba", 0, "strict", "mamba"),                     # threshold 0 is strict
    ("llama:relaxed-guarded", "llama", DEFAULT_RELAXED_THRESHOLD, "relaxed-guarded",
     f"llama:relaxed-guarded:{DEFAULT_RELAXED_THRESHOLD}"),
    ("history:Relaxed-Guarded:4", "history", 4, "relaxed-guarded", "history:relaxed-guarded:4"),
])
def test_configuration_names_become_policy_configs_and_back(text, draft, threshold, rule, name):
    from spec_vla_ros.policy import PolicyConfig, validate_config
    configuration = DecoderSpec.parse(text, {}, 3)
    assert (configuration.draft, configuration.acceptance.threshold) == (draft, threshold)
    assert configuration.acceptance.rule == rule
    assert configuration.name == name and DecoderSpec.parse(name, {}, 3) == configuration
    policy_config = PolicyConfig(draft="ar").with_spec(configuration)
    assert (policy_config.draft, policy_config.acceptance, policy_config.relaxed_threshold) == (draft, rule, threshold)
    assert policy_config.num_draft_tokens == 3 and policy_config.spec == configuration
    validate_config(policy_config)


@pytest.mark.parametrize("text", ["nope", "none", "ar:relaxed", "mamba:loose", "mamba:relaxed:x", "llama:relaxed:3:4",
                                  "history:strict:2", "mamba:guarded", "mamba:relaxed-guarded:-1"])
def test_bad_configuration_names_are_rejected(text):
    with pytest.raises(ValueError, match=f"^configuration '{text}': "):
        DecoderSpec.parse(text)


def test_episode_log_drops_a_half_written_line_and_counts_each_episode_once(tmp_path):
    path = tmp_path / "episodes.jsonl"
    first = {"configuration": "ar", "task_id": 0, "episode": 0, "wall_seconds": 1.0}
    path.write_text(json.dumps(first) + "\n" + json.dumps({**first, "wall_seconds": 2.0}) + "\n"
                    + '{"configuration": "ar", "task_id": 0, "epi')      # killed mid-write
    log = EpisodeLog(path)
    assert list(log.records.values()) == [first]
    log.append({**first, "episode": 1})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)     # the next record starts on its own line
    assert sorted(EpisodeLog(path).records) == [("ar", 0, 0), ("ar", 0, 1)]


def test_a_run_directory_refuses_other_settings(tmp_path):
    check_settings(tmp_path, {"max_steps": 4, "verifier": "miniature"})
    check_settings(tmp_path, {"max_steps": 4, "verifier": "miniature"})      # resuming with the same settings
    with pytest.raises(ValueError, match="max_steps: 4 -> 300"):
        check_settings(tmp_path, {"max_steps": 300, "verifier": "miniature"})


# --- simulator ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy():
    from spec_vla_ros.policy import PolicyConfig, VLAPolicy
    return VLAPolicy(PolicyConfig(draft="ar"))


def _log(directory):
    return [json.loads(line) for line in (directory / evaluate.EPISODES_FILE).read_text().splitlines()]


class RecordingSession(VerifierSession):
    """Keeps the logits row of every generated position (AR: one per pass)."""

    def __init__(self, model, rows: list):
        super().__init__(model)
        self.rows = rows

    def _forward(self, embeds, **options):
        step = super()._forward(embeds, **options)
        self.rows.append(step.logits[-1].clone())
        return step


def ar_logits(policy, image, instruction) -> torch.Tensor:
    """AR's logits row for each of its tokens on one observation."""
    rows = []
    policy.decode(image, instruction, Decoder(policy.verifier.model,
                                              session_factory=lambda: RecordingSession(policy.verifier.model, rows)))
    return torch.stack(rows)


def near_tie(rows: torch.Tensor) -> bool:
    top = rows.topk(2, dim=-1).values
    return bool((top[:, 0] - top[:, 1] <= STRICT_TIE_TOLERANCE_FP32).any())


@pytest.mark.sim
def test_report_with_ars_noise_floor_and_strict_speculative_decoding(env, policy, tmp_path, monkeypatch):
    configurations = [DecoderSpec.parse("ar"), DecoderSpec.parse("history"), DecoderSpec.parse("history:relaxed")]
    acted = {}                        # configuration -> [(image, instruction, tokens, action)], as the policy acted
    real_act = policy.act

    def recording_act(image, instruction):
        action, stats = real_act(image, instruction)
        acted.setdefault(policy.config.spec.name, []).append((image.copy(), instruction, stats.tokens, action))
        return action, stats
    monkeypatch.setattr(policy, "act", recording_act)
    run_evaluation(env, policy, configurations, [0], 1, tmp_path, progress=False)

    relaxed_name = f"history:relaxed:{DEFAULT_RELAXED_THRESHOLD}"
    episodes = {record["configuration"]: record for record in _log(tmp_path)}
    ar, history, relaxed = episodes["ar"], episodes["history"], episodes[relaxed_name]
    assert sorted(acted) == sorted(episodes)
    for name, record in episodes.items():        # the log holds the tokens and actions each step acted on
        assert record["step_tokens"] == [tokens for _, _, tokens, _ in acted[name]], name
        np.testing.assert_allclose(record["step_actions"], [action for *_, action in acted[name]], atol=1e-6)
    # Relaxed runs carry AR's action on each observation they acted on (the deviation plot's reference).
    assert len(relaxed["step_ar_actions"]) == len(relaxed["step_actions"]) == MAX_STEPS
    assert "step_ar_actions" not in history and "step_ar_actions" not in ar
    assert ar["steps"] == history["steps"] == MAX_STEPS
    # Strict decoding gives AR's tokens except after a near-tied argmax. While the two runs' actions agree
    # they see the same observations; at the first step where they differ, AR's logits on that observation
    # rank the two tokens within the tolerance.
    for step, ((image, instruction, tokens, _), (ar_image, _, ar_tokens, _)) in enumerate(
            zip(acted["history"], acted["ar"])):
        np.testing.assert_array_equal(image, ar_image, err_msg=f"step {step}: same actions so far, other frame")
        if tokens != ar_tokens:
            position = next(i for i, (a, b) in enumerate(zip(tokens, ar_tokens)) if a != b)
            rows = ar_logits(policy, image, instruction)
            gap = float(rows[position, ar_tokens[position]] - rows[position, tokens[position]])
            assert 0 <= gap <= STRICT_TIE_TOLERANCE_FP32, f"step {step} token {position}: AR logit gap {gap:.3g}"
            break
    # AR's own noise floor is recorded for every AR action, and for AR only: AR with reshaped passes gives
    # AR's action wherever AR has no near-tie.
    assert len(ar["step_reshaped_same"]) == MAX_STEPS and "step_reshaped_same" not in history
    for step, (image, instruction, _, _) in enumerate(acted["ar"]):
        assert ar["step_reshaped_same"][step] or near_tie(ar_logits(policy, image, instruction)), f"step {step}"
    assert ar["step_passes"] == [ACTION_DIM] * MAX_STEPS and ar["eos_actions"] == 0
    # History proposes the previous action before the prefill: one pass exactly when it repeats.
    previous = [None] + history["step_tokens"][:-1]
    assert [passes == 1 for passes in history["step_passes"]] == [
        tokens == before for tokens, before in zip(history["step_tokens"], previous)]

    document = json.loads((tmp_path / "eval.json").read_text())
    rows = {row["configuration"]: row for row in document["tables"]["configurations"]}
    assert list(rows) == ["ar", "history", f"history:relaxed:{DEFAULT_RELAXED_THRESHOLD}"]
    for row in rows.values():
        assert row["episodes"] == 1 and row["success_rate"] == 0.0 and row["mean_episode_s"] > 0
        assert row["actions"] == MAX_STEPS and row["ms_per_action"] > 0
        acted_tokens = [tokens for _, _, tokens, _ in acted[row["configuration"]]]
        assert row["speedup_episode"] > 0
        assert row["same_actions_as_ar"] == float(acted_tokens == [tokens for _, _, tokens, _ in acted["ar"]])
    assert rows["ar"]["same_actions_as_ar"] == 1.0
    assert rows["ar"]["acceptance_length"] == 1.0 and rows["ar"]["speedup_action"] == 1.0
    assert rows["ar"]["noise_floor_actions"] == sum(ar["step_reshaped_same"]) / MAX_STEPS
    assert rows["ar"]["noise_floor_episodes"] == float(all(ar["step_reshaped_same"]))
    assert rows["history"].get("noise_floor_actions") is None
    assert rows["history"]["passes_per_action"] == sum(history["step_passes"]) / MAX_STEPS
    assert rows["history"]["acceptance_length"] == pytest.approx(ACTION_DIM / rows["history"]["passes_per_action"])
    tasks = document["tables"]["tasks"]
    assert [(row["task_id"], row["configuration"]) for row in tasks][:2] == [(0, "ar"), (0, "history")]
    assert [row["configuration"] for row in document["tables"]["positions"]][0] == "history"

    markdown = (tmp_path / "eval.md").read_text()
    assert "miniature" in markdown and "1 task(s) x 1 episode(s)" in markdown and "| history |" in markdown
    assert "AR noise floor (actions)" in markdown and f"seeding {env.seeding}" in markdown
    assert json.loads((tmp_path / evaluate.SETTINGS_FILE).read_text())["seeding"] == env.seeding
    assert (tmp_path / "eval_configurations.csv").read_text().count("\n") == 4      # header + 3 rows
    assert [Path(figure).name for figure in document["figures"]] == list(evaluate.FIGURE_FILES.values())
    for figure in document["figures"]:
        with Image.open(figure) as image:
            assert image.format == "PNG" and image.size[0] == FIGURE_PIXELS[0]
        assert f"![{Path(figure).stem}]({Path(figure).name})" in markdown


@pytest.mark.sim
def test_an_interrupted_run_resumes_and_counts_each_episode_once(env, policy, tmp_path, monkeypatch, capsys):
    configurations = [DecoderSpec.parse("history")]
    real_run_episode, runs = evaluate.run_episode, []

    def counted(env, policy, task_id, episode, **options):
        runs.append((task_id, episode))
        return real_run_episode(env, policy, task_id, episode, **options)

    def killed_after_one_episode(*args, **options):
        if runs:
            raise KeyboardInterrupt
        return counted(*args, **options)

    original_decoder = policy.decoder
    monkeypatch.setattr(evaluate, "run_episode", killed_after_one_episode)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(env, policy, configurations, [0], 2, tmp_path, progress=False)
    assert len(_log(tmp_path)) == 1 and policy.decoder is original_decoder

    monkeypatch.setattr(evaluate, "run_episode", counted)
    capsys.readouterr()
    run_evaluation(env, policy, configurations, [0], 2, tmp_path, progress=False)
    assert f"resuming {tmp_path}: 1 of 2 episodes found in episodes.jsonl, 1 to run" in capsys.readouterr().out
    run_evaluation(env, policy, configurations, [0], 2, tmp_path, progress=False)     # nothing left to run
    assert "2 of 2 episodes found in episodes.jsonl, 0 to run" in capsys.readouterr().out
    assert runs == [(0, 0), (0, 1)]
    assert sorted((r["task_id"], r["episode"]) for r in _log(tmp_path)) == [(0, 0), (0, 1)]
    [row] = json.loads((tmp_path / "eval.json").read_text())["tables"]["configurations"]
    assert row["episodes"] == 2 and row["actions"] == 2 * MAX_STEPS


def test_the_seeding_option_defaults_to_openvlas_order_and_is_passed_to_the_env(monkeypatch, tmp_path):
    """--seeding reaches LiberoGoalEnv(seeding=...) (nothing runs: the env is a stand-in)."""
    made = []

    class StandIn:
        def __init__(self, **options):
            made.append(options)

        def __enter__(self):
            raise KeyboardInterrupt          # stop before any episode

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(eval_command, "LiberoGoalEnv", StandIn)
    monkeypatch.setattr(eval_command, "VLAPolicy", type("P", (), {"validate": staticmethod(lambda config: None),
                                                               "__init__": lambda self, config: None}))
    for argv, seeding in (([], "openvla"), (["--seeding", "per_episode"], "per_episode")):
        assert eval_command.main(argv + ["--output", str(tmp_path), "--no-progress"]) == 130
        assert made[-1]["seeding"] == seeding
    with pytest.raises(SystemExit):
        eval_command.main(["--seeding", "shuffled"])


def _no_model(monkeypatch):
    """Fail the test if the verifier or the simulator would start."""
    monkeypatch.setattr(eval_command, "VLAPolicy", type("P", (), {
        "validate": staticmethod(lambda config: None),
        "__init__": lambda self, config: pytest.fail("the verifier was loaded")}))
    monkeypatch.setattr(eval_command, "LiberoGoalEnv", lambda **options: pytest.fail("the simulator was started"))


def _exit_code(argv) -> int:
    try:
        return eval_command.main(argv)
    except SystemExit as exit_:                   # argparse's own errors
        return exit_.code


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "0", "10"], "--tasks [10]: LIBERO-GOAL task ids are 0-9"),
    (["--episodes", "51"], "--episodes 51: LIBERO-GOAL has 50 initial states per task; choose 1-50"),
    (["--max-steps", "0"], "--max-steps and --image-size must be positive"),
    (["--threads", "-2"], "threads must be an integer >= 0"),
    (["--configurations", "ar", "eagle"], "configuration 'eagle'"),
    (["--configurations", "none", "mamba"], "configuration 'none': draft 'none' is now spelled 'ar'"),
    (["--num-draft-tokens", "8"], "--num-draft-tokens 8: expected an integer in 1..7"),
    (["--checkpoint", "mamba"], "--checkpoint takes mamba=PATH or llama=PATH"),
    (["--episodes", "many"], "invalid int value: 'many'"),
])
def test_bad_arguments_fail_in_one_line_before_anything_loads(argv, message, monkeypatch, capsys, tmp_path):
    _no_model(monkeypatch)
    assert _exit_code(argv + ["--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("spec-vla-eval: ") and message in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_an_output_directory_of_other_settings_is_refused_before_anything_loads(monkeypatch, capsys, tmp_path):
    check_settings(tmp_path, {"verifier": "miniature", "max_steps": 300, "seed": 0})
    _no_model(monkeypatch)
    assert _exit_code(["--max-steps", "20", "--output", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error == (f"spec-vla-eval: {tmp_path} holds episodes run with other settings (max_steps: 300 -> 20); "
                     "choose another --output or delete that directory\n")


def test_help_shows_every_options_default_and_help(capsys):
    with pytest.raises(SystemExit):
        eval_command.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--episodes EPISODES", "(default: 50)", "--tasks TASKS [TASKS ...]",
                     "(default: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])", "--threads THREADS", "(default: 1)",
                     "--no-progress no progress bar (default: False)", "(default: runs/eval)"):
        assert expected in text
