"""`spec-vla-bench verifier`'s command line: options and their checks; the measurement is
benchmarks/verifier.py (imported only to run). A bad count or a verifier that does not load is
one line on stderr and exit status 2."""
from __future__ import annotations

from ...vla.constants import MINIATURE
from ...vla.threads import DEFAULT_THREADS, THREADS_HELP, apply_threads
from ..arguments import fail, use_defaults_in_help

PROG = "spec-vla-bench verifier"


def add_arguments(parser) -> None:
    use_defaults_in_help(parser)                 # the command line's conventions (defaults in --help)
    parser.add_argument("--verifier", default=MINIATURE, help="'miniature' or an OpenVLA HF directory")
    parser.add_argument("--device", default="cpu", help="torch device: cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto",
                        help="auto (the checkpoint's own dtype) | float32 | bfloat16 | float16")
    parser.add_argument("--actions", type=int, default=50, help="actions measured (after one warm-up action)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random 256x256 images")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> dict:
    if args.actions < 1 or args.threads < 0:
        raise SystemExit(fail(PROG, f"--actions must be >= 1 and --threads >= 0, got {args.actions} and "
                                    f"{args.threads}"))
    from ...benchmarks import verifier as benchmark
    from ...vla.checkpoint import CheckpointError

    threads = apply_threads(args.threads)
    try:
        verifier, load_s = benchmark.load(args.verifier, args.device, args.dtype)
    except (CheckpointError, ValueError, OSError) as error:     # missing or mismatched checkpoint, bad dtype
        raise SystemExit(fail(PROG, error)) from None
    return benchmark.measure(verifier, args.device, load_s, threads, args.actions, args.seed,
                             progress=not args.no_progress)
