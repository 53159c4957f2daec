"""Every command parses and checks its arguments before it loads the model stack: `--help` of each
console script (read from setup.py) and of each `spec-vla-bench` subcommand, and a bad argument
(one line on stderr, exit 2), run in a fresh interpreter as the console script runs them, leave
torch, transformers and timm unimported. What a command shows of its library without importing
it (a docstring, a default read from the library's source) is the library's own."""
import importlib

import pytest

from command_runner import COMMANDS, run_command


def bench_subcommands() -> list[str]:
    from spec_vla_ros.commands.bench import BENCHMARKS
    return list(BENCHMARKS)


def test_the_commands_are_found():
    assert {"spec-vla-demo", "spec-vla-eval", "spec-vla-bench", "spec-vla-launch", "spec-vla-collect",
            "spec-vla-train-draft", "spec-vla-harness", "spec-vla-analyze", "spec-vla-bag-reindex",
            "spec-vla-write-miniature"} <= set(COMMANDS)
    assert {"cost", "decode", "gpu", "sim"} <= set(bench_subcommands())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_loads_no_model_stack(name, tmp_path):
    completed, code, loaded = run_command(name, ["--help"], tmp_path)
    assert code in (0, None) and completed.stdout.startswith("usage: "), completed.stderr[-2000:]
    assert loaded == [], f"{name} --help imported {loaded}"


@pytest.mark.parametrize("subcommand", bench_subcommands())
def test_each_benchmarks_help_loads_no_model_stack(subcommand, tmp_path):
    completed, code, loaded = run_command("spec-vla-bench", [subcommand, "--help"], tmp_path)
    assert code in (0, None) and f"spec-vla-bench {subcommand}" in completed.stdout, completed.stderr[-2000:]
    assert loaded == [], f"spec-vla-bench {subcommand} --help imported {loaded}"


@pytest.mark.parametrize("arguments", [[name, "--no-such-option"] for name in sorted(COMMANDS)]
                         + [["spec-vla-bench", subcommand, "--no-such-option"] for subcommand in bench_subcommands()],
                         ids=lambda arguments: " ".join(arguments[:-1]))
def test_a_bad_argument_is_one_line_and_exit_2_without_the_model_stack(arguments, tmp_path):
    name, *rest = arguments
    completed, code, loaded = run_command(name, rest, tmp_path)
    assert code == 2, (code, completed.stderr[-2000:])
    assert completed.stderr.count("\n") == 1, completed.stderr          # the option, or a required argument
    assert completed.stderr.startswith(name) and "Traceback" not in completed.stderr
    assert loaded == [], f"{' '.join(arguments)} imported {loaded}"


def test_a_bad_value_is_refused_before_the_model_stack_loads(tmp_path):
    """Checks after parsing (not argparse's) run before the library loads too."""
    for name, arguments, message in (("spec-vla-bench", ["decode", "--num-draft-tokens", "9"], "--num-draft-tokens 9"),
                                     ("spec-vla-eval", ["--tasks", "12"], "--tasks [12]"),
                                     ("spec-vla-harness", ["--traces", str(tmp_path), "--acceptance", "loose"],
                                      "acceptance 'loose'")):
        completed, code, loaded = run_command(name, arguments, tmp_path)
        assert code == 2 and message in completed.stderr and completed.stderr.count("\n") == 1, completed.stderr
        assert loaded == [], f"{name} {' '.join(arguments)} imported {loaded}"


@pytest.mark.parametrize("module, name", [("spec_vla_ros.drafts.eagle_head", "DEFAULT_CONTEXT"),
                                          ("spec_vla_ros.drafts.mamba", "MAMBA_D_STATE"),
                                          ("spec_vla_ros.drafts.mamba", "MAMBA_EXPAND"),
                                          ("spec_vla_ros.training.train", "TRAIN_STATE"),
                                          ("spec_vla_ros.analysis.ray_eval", "LOCAL"),
                                          ("spec_vla_ros.analysis.ray_eval", "PER_EPISODE_SEEDING")])
def test_what_commands_read_from_a_librarys_source_is_its_value(module, name):
    from spec_vla_ros.commands.arguments import library_constant, library_doc
    loaded = importlib.import_module(module)
    assert library_constant(module, name) == getattr(loaded, name)
    assert library_doc(module) == loaded.__doc__


def test_reading_a_constant_that_is_no_literal_is_refused():
    from spec_vla_ros.commands.arguments import library_constant
    with pytest.raises(LookupError, match="STORAGE_DTYPES"):
        library_constant("spec_vla_ros.training.collect", "STORAGE_DTYPES")     # torch dtypes: not a literal
    with pytest.raises(LookupError, match="NO_SUCH_NAME"):
        library_constant("spec_vla_ros.training.collect", "NO_SUCH_NAME")


def test_the_choices_commands_offer_are_the_librarys():
    """Names a command spells without importing its library agree with the library."""
    from spec_vla_ros.commands import collect as collect_command
    from spec_vla_ros.drafts import registry
    from spec_vla_ros.training.collect import STORAGE_DTYPES
    from spec_vla_ros.vla import miniature
    assert collect_command.STORAGE_CHOICES == ("auto", *sorted(STORAGE_DTYPES))
    assert registry.DRAFT_NAMES == tuple(registry.DRAFT_KINDS)
    assert registry.CHECKPOINT_KINDS == tuple(name for name, kind in registry.DRAFT_KINDS.items()
                                              if kind.needs_checkpoint)
    assert miniature.build_miniature().name == miniature.MINIATURE_NAME
