"""The OpenVLA-7B cost model (decoding/cost_model.py) against the architecture the code builds.

Parameter counts are compared with the real modules built on the meta device (no memory); the
weights each piece *reads* are compared with the modules that actually run, found with forward
hooks on the tiny architecture of `spec-vla-bench gpu` (same code, small widths).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from spec_vla_ros.commands.bench import main as bench_main
from spec_vla_ros.benchmarks.gpu import (TINY_TEXT_CONFIG, TINY_VISION_OVERRIDES, architecture,
                                                  count_dispatched_ops)
from spec_vla_ros.decoding import cost_model
from spec_vla_ros.drafts.eagle_head import HEAD_KINDS, EagleDraft, EagleHead, default_core_config
from spec_vla_ros.vla.miniature import miniature_config
from spec_vla_ros.vla.constants import ACTION_TOKEN_MIN, BOS_TOKEN_ID, EMPTY_TOKEN_ID
from spec_vla_ros.vla.model import OpenVLA, VLAConfig
from spec_vla_ros.vla import session as session_module
from spec_vla_ros.vla.session import VerifierSession


def module_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def parts_of(model: OpenVLA) -> dict:
    language_model = model.language_model
    return {"vision_backbone.featurizer": model.vision_backbone.featurizer,
            "vision_backbone.fused_featurizer": model.vision_backbone.fused_featurizer,
            "projector": model.projector,
            "language_model.model.embed_tokens": language_model.model.embed_tokens,
            "language_model.model.layers": language_model.model.layers,
            "language_model.model.norm": language_model.model.norm,
            "language_model.lm_head": language_model.lm_head}


@pytest.fixture(scope="module")
def meta_7b():
    with torch.device("meta"):
        return OpenVLA(VLAConfig())


def test_the_module_imports_without_torch():
    code = "import sys, spec_vla_ros.decoding.cost_model; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_openvla_7b_parameter_counts_match_the_built_architecture(meta_7b):
    counts = cost_model.OPENVLA_7B.parameter_counts()
    built = {name: module_parameters(module) for name, module in parts_of(meta_7b).items()}
    assert set(counts) == set(built)
    for name in built:
        assert abs(counts[name] - built[name]) <= 0.01 * built[name], (name, counts[name], built[name])
    assert sum(counts.values()) == module_parameters(meta_7b)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_7b_draft_head_parameter_counts_match_the_built_heads(meta_7b, kind):
    with torch.device("meta"):
        head = EagleHead(kind, default_core_config(kind, meta_7b), context=cost_model.DEFAULT_DRAFT_CONTEXT)
    expected = cost_model.draft_heads(cost_model.OPENVLA_7B)[kind].parameters()
    assert abs(expected - module_parameters(head)) <= 0.01 * module_parameters(head), (expected, module_parameters(head))


def test_shapes_follow_the_configuration_the_model_is_built_from():
    """The miniature (whatever its widths) and the tiny arch are read from their VLAConfig."""
    for config in (miniature_config(), architecture("tiny")):
        with torch.device("meta"):
            model = OpenVLA(config)
        counts = cost_model.shape_from_config(config).parameter_counts()
        assert counts == {name: module_parameters(module) for name, module in parts_of(model).items()}


class Executed:
    """Forward hooks that record which modules of `root` ran."""

    def __init__(self, root):
        self.ran = set()
        self.handles = [m.register_forward_hook(lambda module, *_: self.ran.add(module)) for m in root.modules()]

    def close(self):
        for handle in self.handles:
            handle.remove()


def tensors_read(function) -> set[int]:
    """Storage addresses of every tensor an op dispatched by `function` takes as input."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.storages = set()

        def __torch_dispatch__(self, op, types, args=(), kwargs=None):
            for value in torch.utils._pytree.tree_leaves((args, kwargs or {})):
                if isinstance(value, torch.Tensor):
                    self.storages.add(value.untyped_storage().data_ptr())
            return op(*args, **(kwargs or {}))

    with Reads() as reads:
        function()
    return reads.storages


def test_weights_read_are_those_of_the_modules_that_run(monkeypatch):
    torch.manual_seed(0)
    config = architecture("tiny")
    model = OpenVLA(config).eval()
    costs = cost_model.action_costs(cost_model.shape_from_config(config), prompt_tokens=12)
    prompt = [BOS_TOKEN_ID] + list(range(100, 110)) + [EMPTY_TOKEN_ID]
    session = VerifierSession(model)
    executed = Executed(model)
    step = session.prefill(torch.randn(6, 224, 224), prompt)
    assert session.length == costs.positions
    for vit in (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer):
        assert all(block in executed.ran for block in vit.blocks[:-1])
        assert (vit.blocks[-1] in executed.ran) == cost_model.VIT_RUNS_LAST_BLOCK
        assert vit.norm not in executed.ran
        assert getattr(vit, "attn_pool", None) is None or vit.attn_pool not in executed.ran
    vision_run = sum(module_parameters(vit) - module_parameters(vit.norm)
                     - (module_parameters(vit.attn_pool) if vit.attn_pool is not None else 0)
                     - (0 if cost_model.VIT_RUNS_LAST_BLOCK else module_parameters(vit.blocks[-1]))
                     for vit in (model.vision_backbone.featurizer, model.vision_backbone.fused_featurizer))
    assert costs.vision.weight_params == vision_run
    assert costs.projector.weight_params == module_parameters(model.projector)
    language_model = model.language_model
    read_by_pass = sum(module_parameters(m) for m in (language_model.model.layers, language_model.model.norm,
                                                       language_model.lm_head))
    executed.ran.clear()
    heads_read = []                # the session computes the logits from the lm_head's weight (vla.session)
    original = session_module.lm_head_logits
    monkeypatch.setattr(session_module, "lm_head_logits",
                        lambda weight, hidden: heads_read.append(weight) or original(weight, hidden))
    session.extend([ACTION_TOKEN_MIN + 5]).greedy()      # on the CPU the logits are computed when read
    assert [id(w) for w in heads_read] == [id(language_model.lm_head.weight)]
    assert all(layer in executed.ran for layer in language_model.model.layers)
    assert costs.passes[1].weight_params == read_by_pass
    executed.close()

    for kind in HEAD_KINDS:
        head = EagleHead(kind, default_core_config(kind, model), context=cost_model.DEFAULT_DRAFT_CONTEXT).eval()
        draft = EagleDraft(head, model)
        draft.begin(step.hidden, step.input_embeds)
        draft.propose(ACTION_TOKEN_MIN + 5, 1)          # the token's fc input, computed once per id
        read = tensors_read(lambda: draft.propose(ACTION_TOKEN_MIN + 5, 1))
        unread = [name for name, parameter in head.named_parameters()
                  if parameter.untyped_storage().data_ptr() not in read]
        assert unread == ["fc.bias"], kind       # a step reads every weight; fc's bias is in the token's input
        action_rows = cost_model.ACTION_ROWS * model.hidden_size
        assert costs.draft_steps[kind].weight_params == module_parameters(head) + action_rows, kind


def test_kernel_counts_are_the_ops_the_code_dispatches():
    """The eager estimate's kernel counts against torch.profiler's count of dispatched non-view ops,
    on tiny architectures of random depth (so the per-layer constants are what is checked)."""
    layers, depth = 1 + os.urandom(1)[0] % 3, 2 + os.urandom(1)[0] % 3
    config = VLAConfig(text_config={**TINY_TEXT_CONFIG, "num_hidden_layers": layers},
                       vision_overrides=tuple(dict(o, depth=depth) for o in TINY_VISION_OVERRIDES))
    torch.manual_seed(0)
    model = OpenVLA(config).eval()
    costs = cost_model.action_costs(cost_model.shape_from_config(config), prompt_tokens=12)
    pixels, prompt = torch.randn(6, 224, 224), [BOS_TOKEN_ID] + list(range(100, 110)) + [EMPTY_TOKEN_ID]
    session = VerifierSession(model)
    step = session.prefill(pixels, prompt)

    def one_pass():
        session.extend([ACTION_TOKEN_MIN + 5])
        session.truncate(costs.positions)

    measured = {"prefill": count_dispatched_ops(lambda: VerifierSession(model).prefill(pixels, prompt)),
                "pass_1": count_dispatched_ops(one_pass)}
    expected = {"prefill": costs.prefill.kernels, "pass_1": costs.passes[1].kernels}
    for kind in HEAD_KINDS:
        draft = EagleDraft(EagleHead(kind, default_core_config(kind, model), context=16).eval(), model)
        draft.begin(step.hidden, step.input_embeds)
        draft.propose(ACTION_TOKEN_MIN + 5, 1)          # the token's fc input, computed once per id
        measured[kind] = count_dispatched_ops(lambda: draft.propose(ACTION_TOKEN_MIN + 5, 1))
        expected[kind] = costs.draft_steps[kind].kernels
    for name in measured:
        assert abs(measured[name] - expected[name]) <= 0.1 * measured[name], (name, measured, expected, layers, depth)


def test_predictions_behave_as_a_roofline(tmp_path, capsys):
    out = tmp_path / "cost.json"
    bench_main(["cost", "--json", str(out), "--passes", "7", "3.5", "1"])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result["devices"]) == {cost_model.H200.name, cost_model.RTX_4090.name}
    for device in result["devices"].values():
        assert "prefill : pass(1 token) : mamba step" in printed
        for mode in ("roofline", "eager"):
            entry = device[mode]
            passes = [entry["ms"][f"pass_{n}"] for n in range(1, cost_model.MAX_PASS_TOKENS + 1)]
            assert passes == sorted(passes) and passes[0] > 0
            assert entry["split"]["pass_1"] == pytest.approx(1.0)
            assert entry["ms"]["prefill"] > entry["ms"]["pass_1"]
            assert entry["split"]["history_step"] == 0
            assert 0 < entry["split"]["mamba_step"] <= entry["split"]["llama_step"] <= 0.1
            for kind, by_passes in entry["speculative_ms_per_action"].items():
                assert by_passes["1.0"] < by_passes["3.5"] < by_passes["7.0"]
                assert by_passes["1.0"] < entry["ar_ms_per_action"], kind
        for name, ms in device["roofline"]["ms"].items():
            assert ms <= device["eager"]["ms"][name] + 1e-12, name


@pytest.mark.parametrize("argv, message", [(["--passes", "0.5"], "--passes"),
                                           (["--num-draft-tokens", "8"], "--num-draft-tokens")])
def test_bad_arguments_are_refused_with_a_message(argv, message):
    with pytest.raises(SystemExit, match=message):
        bench_main(["cost"] + argv)


def test_bad_prompt_length_is_refused():
    with pytest.raises(ValueError, match="prompt_tokens"):
        cost_model.action_costs(prompt_tokens=0)


def test_the_draft_context_agrees_with_the_heads():
    from spec_vla_ros.drafts.eagle_head import DEFAULT_CONTEXT
    assert cost_model.DEFAULT_DRAFT_CONTEXT == DEFAULT_CONTEXT


# --- tree passes (issue #24) -----------------------------------------------------------------------

def test_a_tree_pass_counts_every_node_and_costs_a_gpu_about_one_pass():
    costs = cost_model.action_costs()
    one = costs.passes[1]
    for nodes in (7, 15, 31, 49):
        tree = costs.tree_pass(nodes)
        chain = costs.llm.forward_cost(1 + nodes, costs.positions, 1 + nodes)
        assert tree.weight_params == one.weight_params                  # the same weights, read once
        assert tree.flops > chain.flops > one.flops                     # dense attention over the mask
        roofline = cost_model.ms(tree, cost_model.H200, "roofline") / cost_model.ms(one, cost_model.H200, "roofline")
        assert 1.0 <= roofline < 1.1, nodes                             # bandwidth-bound up to 50 positions
    assert cost_model.ms(costs.tree_pass(255), cost_model.RTX_4090, "roofline") > \
        1.5 * cost_model.ms(one, cost_model.RTX_4090, "roofline")      # where compute starts to count


@pytest.mark.parametrize("mode", ["roofline", "eager"])
def test_a_recorded_chain_profile_costs_what_the_chain_formula_says(mode):
    costs, device = cost_model.action_costs(), cost_model.H200
    for k, passes in ((1, 5), (4, 3), (6, 2)):
        recorded = [0] + [k] * (passes - 1)
        assert cost_model.profile_ms(costs, device, mode, "mamba", recorded) == pytest.approx(
            cost_model.speculative_ms(costs, device, mode, "mamba", passes, k))
    ar = cost_model.profile_ms(costs, device, mode, "ar", [0] * 7)
    assert ar == pytest.approx(cost_model.ar_ms(costs, device, mode))
    tree = cost_model.profile_ms(costs, device, mode, "mamba", [7, 50, 50], (6, 8))
    chain = cost_model.profile_ms(costs, device, mode, "mamba", [7, 4, 4], None)
    assert tree > chain                                     # same passes, bigger passes and draft levels
    with pytest.raises(ValueError, match="at least its prefill pass"):
        cost_model.profile_ms(costs, device, mode, "mamba", [])
