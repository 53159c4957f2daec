"""Command-line conventions shared by `spec-vla-collect` and `spec-vla-train-draft`.

`--device cpu|cuda[:N]`, `--dtype auto|float32|bfloat16|float16` and `--threads N` are spelled
as in `spec-vla-eval`. Paths given on the command line are made absolute against the caller's
current directory as they are parsed, so what a manifest or checkpoint records points at the
same file from anywhere. An expected failure (bad argument, missing input, output directory
in the way, a verifier that contradicts the traces) ends the command with one line on stderr
and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

from ..drafts.checkpoints import DraftCheckpointError
from ..drafts.eagle_head import HEAD_KINDS as DRAFT_HEADS
from ..vla.checkpoint import MINIATURE, CheckpointError
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP, apply_threads

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
USAGE_ERROR = 2


class CommandError(ValueError):
    """An expected failure of a command; its message is the one line the user sees."""


EXPECTED_ERRORS = (CommandError, CheckpointError, DraftCheckpointError)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (`prog: error: ...`) instead of the usage too."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def absolute_path(text: str) -> Path:
    """argparse type: a path made absolute against the caller's current directory (`..` resolved
    lexically, symbolic links kept)."""
    return Path(os.path.abspath(os.path.expanduser(text)))


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
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP + f" (default: {DEFAULT_THREADS})")


def apply_runtime_arguments(args) -> None:
    """Check the device exists and set the CPU thread count."""
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CommandError(f"--device {args.device}: CUDA is not available on this machine")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CommandError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if isinstance(args.threads, bool) or not isinstance(args.threads, int) or args.threads < 0:
        raise CommandError(f"--threads {args.threads}: expected 0 (torch's default) or a positive count")
    apply_threads(args.threads)


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    """`--checkpoint DRAFT=PATH` entries of spec-vla-eval, -harness and -bench decode -> {draft: absolute
    path} (absolute: Ray actors and node processes may run elsewhere). CommandError for a bad entry or
    two different paths for one draft."""
    checkpoints = {}
    for item in items:
        name, separator, path = item.partition("=")
        if not separator or name not in DRAFT_HEADS or not path:
            raise CommandError(f"--checkpoint takes mamba=PATH or llama=PATH, got '{item}'")
        path = str(absolute_path(path))
        if checkpoints.get(name, path) != path:
            raise CommandError(f"two checkpoints for {name}: {checkpoints[name]} and {path}")
        checkpoints[name] = path
    return checkpoints


def check_new_directory(path: Path, option: str) -> None:
    """The output directory must not exist yet, or be empty."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CommandError(f"{option} {path} already exists and is not empty; choose a new directory")


def check_counts(args, names: tuple[str, ...]) -> None:
    """Each named option is at least 1, and --context is 0 (the whole prompt) or positive."""
    for name in names:
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least 1")
    if args.context < 0:
        raise CommandError(f"--context {args.context}: expected 0 (the whole prompt) or a positive count")


def run(prog: str, command, args):
    """`command(args)`; an expected failure becomes `prog: error: message` and exit status 2."""
    try:
        return command(args)
    except EXPECTED_ERRORS as error:
        message = " ".join(str(error).split())        # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
