"""What the training and analysis library shares with the commands that drive it.

`CommandError` is an expected failure of a command (bad argument, missing input, output
directory in the way, a verifier that contradicts the traces); its message is the one line the
user sees (the commands print it and exit with status 2, commands/arguments.py). The rest are
the checks the library runs on a command's arguments before any work: paths made absolute,
output directories, counts, and the device / dtype / threads settings (`--device cpu|cuda[:N]`,
`--dtype auto|float32|bfloat16|float16`, `--threads N`, spelled as in `spec-vla-eval`).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..vla.threads import apply_threads

DTYPES = ("auto", "float32", "bfloat16", "float16")


class CommandError(ValueError):
    """An expected failure of a command; its message is the one line the user sees."""


def absolute_path(text: str) -> Path:
    """argparse type: a path made absolute against the caller's current directory (`..` resolved
    lexically, symbolic links kept)."""
    return Path(os.path.abspath(os.path.expanduser(text)))


def apply_runtime_arguments(args) -> None:
    """Check the device exists and set the CPU thread count."""
    import torch        # here: the commands import this module before they parse their arguments

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CommandError(f"--device {args.device}: CUDA is not available on this machine")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise CommandError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if isinstance(args.threads, bool) or not isinstance(args.threads, int) or args.threads < 0:
        raise CommandError(f"--threads {args.threads}: expected 0 (torch's default) or a positive count")
    apply_threads(args.threads)


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
