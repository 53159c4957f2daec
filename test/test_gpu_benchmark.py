"""`spec-vla-bench gpu`'s whole code path, run in-process on the CPU with the tiny architecture."""
import json
import math
import os

import functools
import zlib

import numpy as np
import pytest
import torch

from scripted_verifier import Script, ScriptedSession
from spec_vla_ros.commands.bench import main as bench_main
from spec_vla_ros.benchmarks import gpu as gpu_benchmark
from spec_vla_ros.decoding.decoder import Decoder
from spec_vla_ros.decoding.noise_floor import RESHAPED_AR, reshaped_ar_decoder
from spec_vla_ros.vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN

REQUIRED = ("device", "build", "bandwidth", "passes", "passes_static", "cost_model")


def tiny_run(tmp_path, *extra):
    seed = int.from_bytes(os.urandom(2), "little")
    out = tmp_path / "gpu.json"
    torch.set_num_threads(1)
    bench_main(["gpu", "--arch", "tiny", "--device", "cpu", "--out", str(out), "--repeats", "2",
                           "--episodes", "2", "--steps-per-episode", "3", "--seed", str(seed), *extra])
    return json.loads(out.read_text()), seed


def numbers(value, path=""):
    """Every number in a JSON tree, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_every_section_is_measured_and_written(tmp_path):
    result, seed = tiny_run(tmp_path)
    for section in REQUIRED + gpu_benchmark.OPTIONAL_SECTIONS + ("agreement",):
        assert section in result, (section, seed)
    assert result["skipped"] == {} and result["errors"] == {}, seed
    assert result["device"]["torch"] == torch.__version__
    # on the CPU the Mamba head runs its PyTorch path, and the JSON says why (mamba_ssm is CUDA only)
    assert result["device"]["mamba_ssm_kernels"] is False, seed
    assert "CUDA" in result["device"]["mamba_ssm_kernels_not_used_because"], seed
    for path, value in numbers(result):
        assert math.isfinite(value), (path, seed)
    passes = result["passes"]["pass"]
    assert sorted(passes, key=int) == [str(n) for n in range(1, 9)], seed
    positive = [result["passes"]["prefill_ms"], result["bandwidth"]["copy_gbs"], result["bandwidth"]["matmul_tflops"]]
    positive += [entry["ms"] for entry in passes.values()] + [entry["achieved_gbs"] for entry in passes.values()]
    trees = result["passes"]["tree_pass"]
    assert sorted(trees, key=int) == [str(n) for n in gpu_benchmark.TREE_PASS_NODES], seed
    positive += [entry["ms"] for entry in trees.values()]
    assert all(entry["of_pass_1"] == pytest.approx(entry["ms"] / passes["1"]["ms"]) for entry in trees.values())
    positive += [value for entry in result["drafts"].values() for name, value in entry.items()
                 if name not in ("accept_ms", "compiled")]
    for kind in ("mamba", "llama"):                # steps traced with the passes' compile setting
        compiled_steps = result["drafts"][kind]["compiled"]
        positive += [compiled_steps[name] for name in ("compile_s", "step_ms", "propose_4_ms")]
        assert compiled_steps["step_of_eager"] == pytest.approx(compiled_steps["step_ms"]
                                                                / result["drafts"][kind]["step_ms"]), seed
    assert all(value > 0 for value in positive), seed
    static, dynamic = result["passes_static"], result["passes"]         # the same passes over the static KV cache
    assert (static["kv_cache"], dynamic["kv_cache"]) == ("static", "dynamic"), seed
    assert static["positions"] == dynamic["positions"] and static["pass"].keys() == passes.keys(), seed
    # preallocated for prompt + action + a pass, so it holds more than the prompt's keys and values
    assert static["kv_cache_bytes"] > dynamic["kv_cache_bytes"] > 0, seed
    assert static["of_dynamic"]["pass_4"] == pytest.approx(static["pass"]["4"]["ms"] / passes["4"]["ms"]), seed
    compiled = result["passes_compiled"]                # compiled per bucket (traced, eager backend, on the CPU)
    assert compiled["kv_cache"] == "compiled" and compiled["warm_up_s"] > 0 and static["warm_up_s"] == 0, seed
    assert compiled["pass"].keys() == passes.keys() and compiled["tree_pass"].keys() == trees.keys(), seed

    configurations = result["decode"]["configurations"]
    assert set(configurations) == {"ar", RESHAPED_AR, *gpu_benchmark.DECODE_DRAFTS,
                                   *gpu_benchmark.CACHE_CONFIGURATIONS}
    assert configurations["ar/static"]["passes_per_action"] == configurations["ar/compiled"]["passes_per_action"] \
        == ACTION_DIM, seed
    assert configurations["ar"]["passes_per_action"] == ACTION_DIM and configurations["ar"]["same_as_ar"] == 1.0
    for name, entry in configurations.items():
        # the random verifier answers with 7 action tokens (no EOS): tokens per pass x passes = 7
        assert entry["acceptance_length"] * entry["passes_per_action"] == pytest.approx(ACTION_DIM), (name, seed)
        assert 1 <= entry["passes_per_action"] <= ACTION_DIM and entry["ms_median"] > 0, (name, seed)
    agreement = result["agreement"]             # in bf16: what the scripted test below cannot show
    assert agreement["noise_floor_same_as_ar"] == configurations[RESHAPED_AR]["same_as_ar"], seed
    for name, share in agreement["strict_same_as_ar"].items():
        assert share == configurations[name]["same_as_ar"] and agreement["token_agreement"][name] >= share, seed

    rows = result["cost_model"]["devices"][f"measured: {result['device']['name']}"]["rows"]
    expected_rows = {"prefill", *(f"pass_{n}" for n in range(1, 9)), "action_ar",
                     *(f"tree_pass_{n}" for n in gpu_benchmark.TREE_PASS_NODES),
                     *(f"action_{name}" for name in gpu_benchmark.DECODE_DRAFTS),
                     *(f"{kind}_{what}" for kind in ("mamba", "llama") for what in ("step", "begin"))}
    assert set(rows) == expected_rows
    assert all(row["measured_ms"] > 0 and 0 < row["roofline_ms"] <= row["eager_ms"] for name, row in rows.items()
               if name != "action_history"), seed


class ObservationScript(ScriptedSession):
    """A verifier without floating-point noise whose greedy action is a function of the observation
    (a hash of its pixels and prompt picks 7 action tokens)."""

    def prefill(self, pixel_values, prompt_ids, proposals=()):
        key = zlib.crc32(pixel_values.float().cpu().numpy().tobytes() + repr(list(prompt_ids)).encode())
        truth = np.random.default_rng(key).integers(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, ACTION_DIM)
        self.script = Script([int(token) for token in truth])
        return super().prefill(pixel_values, prompt_ids, proposals)


def test_agreement_is_complete_on_a_verifier_without_floating_point_noise(monkeypatch):
    """The decode section's 'same as AR' compares each configuration's actions with AR's on the same
    observations: on a scripted verifier strict decoding and AR's noise floor reproduce AR exactly, so
    every share is 1.0, while each action's tokens differ between observations."""
    seed = int.from_bytes(os.urandom(2), "little")
    torch.set_num_threads(1)
    model = gpu_benchmark.build_random_architecture(gpu_benchmark.architecture("tiny"), "cpu", gpu_benchmark.DTYPE)
    sessions = []

    def scripted():
        sessions.append(ObservationScript(Script([]), model.hidden_size, gpu_benchmark.DTYPE, seed=seed))
        return sessions[-1]
    monkeypatch.setattr(gpu_benchmark, "Decoder", functools.partial(Decoder, session_factory=scripted))
    monkeypatch.setattr(gpu_benchmark, "reshaped_ar_decoder", lambda model: reshaped_ar_decoder(model, scripted))
    observed = gpu_benchmark.observations(model, 2, 3, 8, seed)
    section, agreement = gpu_benchmark.decode_section(model, "cpu", observed, 4, seed)
    assert agreement["noise_floor_same_as_ar"] == 1.0 and agreement["token_agreement"][RESHAPED_AR] == 1.0, seed
    assert agreement["strict_same_as_ar"] == dict.fromkeys(gpu_benchmark.DECODE_DRAFTS
                                                           + tuple(gpu_benchmark.CACHE_CONFIGURATIONS), 1.0), seed
    assert all(section["configurations"][name]["same_as_ar"] == 1.0 for name in section["configurations"]), seed
    truths = {tuple(session.script.truth) for session in sessions}
    assert len(truths) == len(observed), f"seed {seed}: the script should differ between observations"


def test_a_short_budget_skips_the_optional_sections_and_says_so(tmp_path):
    result, seed = tiny_run(tmp_path, "--budget-s", "0")
    for section in REQUIRED:
        assert section in result, (section, seed)
    for section in gpu_benchmark.OPTIONAL_SECTIONS:
        assert section not in result and result["skipped"][section].startswith("budget:"), (section, seed)
    assert "agreement" in result["skipped"]
    rows = next(iter(result["cost_model"]["devices"].values()))["rows"]
    assert not any(name.startswith("action_") or name.endswith("_step") for name in rows)


def test_a_missing_cuda_device_is_refused_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="CUDA is not available"):
        bench_main(["gpu", "--device", "cuda", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_an_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture 'huge' is unknown"):
        gpu_benchmark.architecture("huge")
