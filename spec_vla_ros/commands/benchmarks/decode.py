"""`spec-vla-bench decode`'s command line: options, their checks, and which drafts run; the
measurement and its tables are benchmarks/decode.py (imported only to run).

Shapes (`--trees`): every draft runs as a chain of each `--num-draft-tokens` ('chain') and as each
tree shape given (`tree:NODES[:DEPTH[:TOP_K]]`, `hybrid:NODES[:DEPTH[:TOP_K]]`; decoding/spec.py's
syntax), under each acceptance rule, AR and its noise floor beside them in the same run.

Drafts: `--checkpoint mamba=DIR` / `llama=DIR` (as in spec-vla-eval; `--mamba-checkpoint` and
`--llama-checkpoint` say the same). Without one, the packaged head serves the miniature; for any
other verifier that head is skipped with a line saying how to pass one, and `history` (no
checkpoint) always runs. Paths are taken relative to the caller's directory; a bad argument,
missing checkpoint or one trained for another verifier ends the command with one line on stderr
and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from ...decoding.acceptance import GUARDED_RULE, RELAXED_RULE
from ...decoding.spec import CHAIN, check_num_draft_tokens, parse_tree_shape
from ...drafts.kinds import CHECKPOINT_KINDS, SPECULATIVE_KINDS
from ...training.arguments import DTYPES, CommandError, absolute_path
from ...vla.constants import ACTION_DIM, MINIATURE
from ...vla.threads import DEFAULT_THREADS, THREADS_HELP
from ..arguments import (device_argument, expected_errors, fail, parse_checkpoints, use_defaults_in_help,
                         verifier_argument)

PROG = "spec-vla-bench decode"

BENCH_SEED = 100_000          # synthetic episodes far from the training seeds (0..)
# 12 scenes x 5 control steps (60 actions). A draft's acceptance varies far more between scenes
# than between the steps of one scene (whose frames barely move), so the scenes are what the
# benchmark samples: on the earlier default, 3 scenes x 10 steps, the packaged Mamba head's
# teacher-forced accuracy (mean over draft positions 1-6) was 0.32, against 0.49 on 30 fresh
# scenes of the same generator and on its validation set. Each scene still has 4 steps that
# follow another (carried state, history draft).
BENCH_EPISODES = 12
BENCH_STEPS_PER_EPISODE = 5
# Chains of each --num-draft-tokens, Spec-VLA-sized trees of 8 to 50 nodes and the hybrid tree (issue #24).
BENCH_TREES = [CHAIN, "tree:8", "tree:16", "tree:32", "tree:50", "hybrid:50"]
ARCHES = ("miniature", "openvla-7b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    use_defaults_in_help(parser)              # '(default: X)' in --help, one-line errors, exit 2
    parser.add_argument("--verifier", type=verifier_argument, default=MINIATURE,
                        help="'miniature' or an OpenVLA HF directory (default: %(default)s)")
    parser.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda or cuda:N "
                                                                              "(default: %(default)s)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="the verifier's dtype; auto: the checkpoint's own (default: %(default)s)")
    parser.add_argument("--drafts", nargs="+", default=list(SPECULATIVE_KINDS), choices=SPECULATIVE_KINDS,
                        help="drafts to measure beside AR; for a verifier other than the miniature, mamba and llama "
                             "run only with a checkpoint (default: %(default)s)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="DRAFT=PATH",
                        help="a trained draft checkpoint for mamba or llama, as in spec-vla-eval; repeatable "
                             "(default: the packaged ones, which fit the miniature only)")
    parser.add_argument("--mamba-checkpoint", type=optional_path, default="",
                        help="same as --checkpoint mamba=PATH (default: '', the packaged one)")
    parser.add_argument("--llama-checkpoint", type=optional_path, default="",
                        help="same as --checkpoint llama=PATH (default: '', the packaged one)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[0, 3, 6, 9],
                        help="0 = strict acceptance, otherwise each rule of --relaxed-rules with that threshold "
                             "(default: %(default)s)")
    parser.add_argument("--relaxed-rules", nargs="+", default=[RELAXED_RULE], choices=[RELAXED_RULE, GUARDED_RULE],
                        help="relaxed: Spec-VLA's exact rule (|draft id - verifier id| <= T); relaxed-guarded: also "
                             "both ids action tokens and the gripper on the verifier's side (default: %(default)s)")
    parser.add_argument("--num-draft-tokens", type=int, nargs="+", default=[2, 4, 6],
                        help=f"tokens a draft proposes per verifier pass, each in 1..{ACTION_DIM} "
                             "(default: %(default)s)")
    parser.add_argument("--trees", nargs="+", default=BENCH_TREES,
                        help="what the drafts propose in: 'chain' (each --num-draft-tokens), "
                             "tree:NODES[:DEPTH[:TOP_K]] (the draft's own tree: EAGLE-2's dynamic tree for the heads) "
                             "or hybrid:NODES[:DEPTH[:TOP_K]] (with the previous action and retrieved continuations); "
                             "depth and top-k default to decoding.spec's (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=BENCH_EPISODES,
                        help="synthetic episodes (scenes), seeds from --seed (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=BENCH_SEED,
                        help="first synthetic episode's seed, far from the training seeds (default: %(default)s)")
    parser.add_argument("--steps-per-episode", type=int, default=BENCH_STEPS_PER_EPISODE,
                        help="control steps per synthetic episode (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed actions per configuration first (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP + " (default: %(default)s)")
    parser.add_argument("--json", type=optional_path, help="write all results here (default: not written)")
    parser.add_argument("--markdown", type=optional_path, help="write the table here (default: not written)")
    parser.add_argument("--arch", choices=ARCHES, default="miniature",
                        help="openvla-7b: also time the full-size architecture (random weights, bf16, GPU) "
                             "(default: %(default)s)")
    parser.add_argument("--arch-device", type=device_argument, default="cuda",
                        help="device for --arch openvla-7b (default: %(default)s)")
    parser.add_argument("--arch-repeats", type=int, default=10,
                        help="timed repeats per measurement for --arch openvla-7b (default: %(default)s)")
    parser.add_argument("--arch-prompt-tokens", type=int, default=24,
                        help="prompt length in Llama-2 tokens for the 7B timing, LIBERO instructions: ~20-30 "
                             "(default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="run --arch openvla-7b on a CPU anyway (default: %(default)s)")


def optional_path(text: str) -> str:
    """argparse type: '' stays '' (not given), anything else is made absolute against the caller's directory."""
    return str(absolute_path(text)) if text else ""


def draft_checkpoints(args) -> dict[str, str]:
    """{draft: checkpoint} from --checkpoint DRAFT=PATH and --mamba/--llama-checkpoint (the one place
    the two spellings meet); '' = none given."""
    given = parse_checkpoints(args.checkpoint)
    checkpoints = {kind: getattr(args, f"{kind}_checkpoint", "") for kind in CHECKPOINT_KINDS}
    for name, path in given.items():
        if checkpoints[name] and checkpoints[name] != path:
            raise CommandError(f"two checkpoints for {name}: {checkpoints[name]} and {path}")
        checkpoints[name] = path
    return checkpoints


def check_arguments(args) -> None:
    """What can be checked before anything loads (the verifier's files: run). Raises CommandError."""
    counts = {"--episodes": args.episodes, "--steps-per-episode": args.steps_per_episode,
              "--arch-repeats": args.arch_repeats}
    for option, value in counts.items():
        if value < 1:
            raise CommandError(f"{option} {value}: expected at least 1")
    if args.warmup < 0:
        raise CommandError(f"--warmup {args.warmup}: expected 0 or more")
    for k in args.num_draft_tokens:
        try:
            check_num_draft_tokens(k, "--num-draft-tokens")
        except ValueError as error:
            raise CommandError(str(error)) from None
    for text in args.trees:
        try:
            parse_tree_shape(text)
        except ValueError as error:
            raise CommandError(f"--trees: {error}") from None
    if any(threshold < 0 for threshold in args.thresholds):
        raise CommandError(f"--thresholds {' '.join(map(str, args.thresholds))}: expected 0 (strict) or positive")


def drafts_to_run(args) -> list:
    """Each draft of --drafts, resolved (checked without loading weights; drafts.registry's
    ResolvedDraft). A draft head with no checkpoint for a verifier other than the miniature is
    skipped, with a line saying how to add one (history needs none and always runs). Raises
    CommandError."""
    from ...benchmarks.decode import resolve_drafts

    kept, skipped = resolve_drafts(args.verifier, args.drafts, draft_checkpoints(args))
    for name, verifier_name in skipped:
        print(f"{PROG}: skipping draft {name}: no checkpoint for verifier '{verifier_name}' (the packaged one "
              f"fits the miniature only); pass --checkpoint {name}=DIR from spec-vla-train-draft", file=sys.stderr)
    return kept


def run(args) -> dict:
    """Check the arguments, resolve the drafts, then run the benchmark; an expected failure (bad
    argument, missing or unfit checkpoint, no CUDA) ends it with one line on stderr and exit
    status 2."""
    try:
        check_arguments(args)
        if args.verifier != MINIATURE:
            from ...vla.checkpoint import check_checkpoint_files

            check_checkpoint_files(args.verifier)          # CheckpointError naming what is missing
        drafts = drafts_to_run(args)
        from ...benchmarks.decode import benchmark

        return benchmark(args, drafts)
    except expected_errors() as error:
        raise SystemExit(fail(PROG, error)) from None
