"""`spec-vla-bench full-size DIR`'s command line: options and the checks made before anything is
written; the proof itself (write, load, act) is benchmarks/full_size.py (imported only to run)."""
from __future__ import annotations

from pathlib import Path

from ...vla.threads import check_threads

PROG = "spec-vla-bench full-size"


def add_arguments(parser) -> None:
    parser.add_argument("directory", type=Path, help="a new directory to write the checkpoint to (~15 GB), deleted "
                                                     "afterwards unless --keep; an existing checkpoint there is used "
                                                     "as it is and never deleted")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--dtype", default="auto", help="auto (the checkpoint's bf16) | bfloat16 | float32")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> dict:
    directory = Path(args.directory).absolute()
    if not (directory / "config.json").exists() and directory.exists() and any(directory.iterdir()):
        # never write into, or delete, someone's files
        raise SystemExit(f"{PROG}: {directory} exists and holds no OpenVLA checkpoint; "
                         "name a new directory (it is deleted afterwards unless --keep)")
    try:
        check_threads(args.threads)
    except ValueError as error:
        raise SystemExit(f"{PROG}: {error}") from None
    from ...benchmarks.full_size import benchmark

    return benchmark(directory, args.keep, args.threads, args.dtype, args.seed)
