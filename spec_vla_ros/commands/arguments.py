"""What every command line of the package shares: help that shows defaults, one-line errors,
and the options several commands spell alike.

`ArgumentParser` is argparse's, with two changes: `--help` prints each option's default after
its help text (argparse.ArgumentDefaultsHelpFormatter; descriptions keep their line breaks), and
a bad argument is one line on stderr, `PROG: error: WHAT (see PROG --help)`, exit code 2, instead
of the usage block. `fail()` is the same line for errors found after parsing.

`spec-vla-collect` and `spec-vla-train-draft` use `OneLineParser` (`PROG: error: WHAT (see
--help)`, exit 2) and `run()`. `--device cpu|cuda[:N]`, `--dtype auto|float32|bfloat16|float16`
and `--threads N` are spelled as in `spec-vla-eval` (`add_runtime_arguments`). Paths given on the
command line are made absolute against the caller's current directory as they are parsed, so
what a manifest or checkpoint records points at the same file from anywhere. An expected failure
(expected_errors(): bad argument, missing input, output directory in the way, a verifier that
contradicts the traces) ends the command with one line on stderr and exit status 2, never a
traceback.

This module loads no model stack (torch, timm, transformers): every command parses and checks its
arguments before it imports the library that runs it, so `--help` and a bad argument answer at
once. The names it needs come from the light modules (vla/constants.py, drafts/kinds.py); what a
command shows of a library module that loads the model stack (its docstring as the description,
a default) is read from that module's source without running it (`library_doc`,
`library_constant`), so it stays defined in one place.

Library modules never import this one; what they need of it (CommandError, absolute_path,
DTYPES, the runtime and output-directory checks) is in training/arguments.py.
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import re
import sys
from pathlib import Path

from ..drafts.kinds import CHECKPOINT_KINDS
from ..errors import one_line
from ..training.arguments import DTYPES, CommandError, absolute_path
from ..vla.constants import MINIATURE
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP

EXIT_USAGE = 2           # bad argument, missing or mismatched checkpoint, existing output: nothing was started
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
# The expected failures besides CommandError, by module: their modules load the model stack, so
# they are looked up when needed (an error of a module not loaded yet cannot have been raised).
CHECKPOINT_ERRORS = (("spec_vla_ros.vla.checkpoint", "CheckpointError"),
                     ("spec_vla_ros.drafts.checkpoints", "DraftCheckpointError"))


def expected_errors() -> tuple[type[Exception], ...]:
    """CommandError and the checkpoint errors of the modules loaded so far: for `except
    expected_errors() as error:` (evaluated only when an exception arrives)."""
    loaded = [sys.modules.get(module) for module, _ in CHECKPOINT_ERRORS]
    return (CommandError, *(getattr(module, name) for module, (_, name) in zip(loaded, CHECKPOINT_ERRORS)
                            if module is not None))


@functools.lru_cache(maxsize=None)
def _library_source(module: str) -> ast.Module:
    """The parsed source of `module` (a dotted name), found without importing it (its packages'
    light __init__ modules load)."""
    return ast.parse(Path(importlib.util.find_spec(module).origin).read_text(), module)


def library_doc(module: str) -> str:
    """`module.__doc__`, read from its source without running it: a command's description in --help."""
    return ast.get_docstring(_library_source(module), clean=False) or ""


def library_constant(module: str, name: str):
    """The value of `module`'s top-level `NAME = <literal>`, read from its source without running it
    (a default a command shows in --help, defined once in the library). LookupError if the module
    assigns no literal to `name`."""
    for node in _library_source(module).body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(target, ast.Name) and target.id == name for target in targets) and node.value is not None:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                break
    raise LookupError(f"{module} assigns no literal to {name} (library_constant reads only literals)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; '(default: X)' after every option's help. An option whose default
    is None says in its own help what happens without it (argparse would print 'default: None')."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """argparse calls this for a bad command line: one line and exit 2, never the usage block."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def use_defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """For a parser made elsewhere (a subcommand's): the same help and error behaviour."""
    parser.formatter_class = HelpFormatter
    parser.error = ArgumentParser.error.__get__(parser)


def fail(prog: str, message) -> int:
    """Print `PROG: MESSAGE` as one line on stderr; returns EXIT_USAGE for `return fail(...)`."""
    print(f"{prog}: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


# --- spec-vla-collect, spec-vla-train-draft (and the shared option types) ---------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (`prog: error: ...`) instead of the usage too."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def verifier_argument(text: str) -> str:
    """argparse type: `miniature`, or an OpenVLA directory made absolute."""
    return text if text == MINIATURE else str(absolute_path(text))


def device_argument(text: str) -> str:
    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device; expected cpu, cuda or cuda:N")
    return text


def add_runtime_arguments(parser: argparse.ArgumentParser, dtype_help: str) -> None:
    parser.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help=dtype_help)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=THREADS_HELP + f" (default: {DEFAULT_THREADS})")


def split_checkpoint(item: str) -> tuple[str, str]:
    """The one `KIND=PATH` syntax: 'KIND=PATH' -> (KIND, PATH made absolute); 'KIND' -> (KIND, '').
    The caller checks KIND."""
    kind, _, path = item.partition("=")
    return kind, str(absolute_path(path)) if path else ""


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    """`--checkpoint DRAFT=PATH` entries of spec-vla-eval, -harness and -bench decode -> {draft: absolute
    path} (absolute: Ray actors and node processes may run elsewhere). CommandError for a bad entry or
    two different paths for one draft."""
    checkpoints = {}
    for item in items:
        kind, path = split_checkpoint(item)
        if kind not in CHECKPOINT_KINDS or not path:
            raise CommandError(f"--checkpoint takes {' or '.join(k + '=PATH' for k in CHECKPOINT_KINDS)}, "
                               f"got '{item}'")
        if checkpoints.get(kind, path) != path:
            raise CommandError(f"two checkpoints for {kind}: {checkpoints[kind]} and {path}")
        checkpoints[kind] = path
    return checkpoints


def run(prog: str, command, args):
    """`command(args)`; an expected failure becomes `prog: error: message` and exit status 2."""
    try:
        return command(args)
    except expected_errors() as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
