"""`spec-vla-harness`: the command line of the offline draft harness (analysis/harness.py, whose
docstring is this command's --help description): options, which drafts to measure (checked
without loading weights), then load, replay and write the report. Expected failures end with one
line on stderr and exit status 2. The harness (and the model stack) loads once the arguments are
parsed."""
from __future__ import annotations

import sys
from pathlib import Path

from ..decoding.spec import check_num_draft_tokens, parse_acceptance, shapes_to_compare
from ..drafts.kinds import CHECKPOINT_KINDS, SPECULATIVE_KINDS
from ..training.arguments import DTYPES, CommandError, absolute_path, apply_runtime_arguments
from ..vla.constants import ACTION_DIM, MINIATURE_NAME
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP
from .arguments import (ArgumentParser, device_argument, expected_errors, fail, library_doc, parse_checkpoints,
                        split_checkpoint, verifier_argument)

DEFAULT_DRAFTS = SPECULATIVE_KINDS             # mamba, llama, history
DEFAULT_RULES = ("strict", "relaxed")         # relaxed: Spec-VLA's exact rule at its threshold (9)


def parse_draft(item: str) -> tuple[str, str]:
    """`KIND` or `KIND=CHECKPOINT` -> (kind, checkpoint made absolute, '' if none)."""
    kind, checkpoint = split_checkpoint(item)
    if kind not in SPECULATIVE_KINDS:
        raise CommandError(f"draft '{item}': expected {', '.join(SPECULATIVE_KINDS)}, optionally KIND=CHECKPOINT_DIR")
    if checkpoint and kind not in CHECKPOINT_KINDS:
        raise CommandError(f"the {kind} draft has no checkpoint")
    return kind, checkpoint


def drafts_to_measure(args, verifier: str) -> list:
    """Each draft to measure, resolved (drafts.registry.ResolvedDraft: checked without loading
    weights) against `verifier`. Left at the default, a draft head with no checkpoint for a verifier
    other than the miniature is skipped, with a line saying how to add it; asked for by name, it is
    refused."""
    from ..analysis.harness import describe, verifier_name
    from ..drafts.registry import resolve

    checkpoints = parse_checkpoints(args.checkpoint)
    entries = [parse_draft(item) for item in (args.drafts or DEFAULT_DRAFTS)]
    entries = [(kind, checkpoint or checkpoints.get(kind, "")) for kind, checkpoint in entries]
    packaged_fits = verifier_name(verifier) == MINIATURE_NAME
    kept = []
    for kind, checkpoint in entries:
        if kind in CHECKPOINT_KINDS and not checkpoint and not packaged_fits:
            advice = f"pass --checkpoint {kind}=DIR from spec-vla-train-draft"
            if args.drafts is None:
                print(f"spec-vla-harness: skipping draft {kind}: no checkpoint for verifier {describe(verifier)} "
                      f"(the packaged one fits the miniature only); {advice}", file=sys.stderr)
                continue
            raise CommandError(f"draft {kind} needs a checkpoint for verifier {describe(verifier)} (the packaged "
                               f"one fits the miniature only): {advice}")
        try:
            kept.append(resolve(kind, checkpoint, verifier))
        except ValueError as error:
            raise CommandError(str(error)) from None
    return kept


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="spec-vla-harness", description=library_doc("spec_vla_ros.analysis.harness"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--traces", type=absolute_path, help="trace directory from spec-vla-collect "
                                                             "(default: none; give --traces or --bag)")
    source.add_argument("--bag", type=absolute_path,
                        help="rosbag2 bag (MCAP) with camera images and instructions, decoded by the verifier here "
                             "(default: none; give --traces or --bag)")
    parser.add_argument("--drafts", nargs="+", metavar="NAME[=CHECKPOINT]",
                        help="drafts to measure, a checkpoint directory optionally given per entry (default: "
                             f"{' '.join(DEFAULT_DRAFTS)}; for a verifier other than the miniature, mamba and "
                             "llama only where --checkpoint gives one)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="DRAFT=PATH",
                        help="a trained draft checkpoint for mamba or llama, as in spec-vla-eval; repeatable "
                             "([] = the packaged ones, which fit the miniature only)")
    parser.add_argument("--acceptance", nargs="+", default=list(DEFAULT_RULES),
                        help="strict, relaxed[:T] (Spec-VLA's exact rule, |draft id - verifier id| <= T, "
                             "default T 9) or relaxed-guarded[:T] (also both ids action tokens and the gripper "
                             "on the verifier's side)")
    parser.add_argument("--num-draft-tokens", nargs="+", type=int, default=[4],
                        help=f"tokens a draft proposes per verifier pass, each in 1..{ACTION_DIM}")
    parser.add_argument("--trees", nargs="+", default=["chain"],
                        help="what the drafts propose in: 'chain' (each --num-draft-tokens), "
                             "tree:NODES[:DEPTH[:TOP_K]] (the draft's own tree) or hybrid:NODES[:DEPTH[:TOP_K]] "
                             "(with the previous action and retrieved continuations), as spec-vla-bench decode")
    parser.add_argument("--verifier", type=verifier_argument,
                        help="'miniature' or an OpenVLA HF directory (default: the verifier the traces' manifest or "
                             "the bag's decode_stats record; a different one is refused)")
    parser.add_argument("--ignore-recorded-verifier", action="store_true",
                        help="with --bag and --verifier: decode the frames with --verifier although the bag was "
                             "recorded with another")
    parser.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="the verifier's dtype; auto: the checkpoint's own")
    parser.add_argument("--output", type=absolute_path, default="runs/harness", help="report directory")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def harness(args) -> int:
    try:
        for k in args.num_draft_tokens:
            check_num_draft_tokens(k, "--num-draft-tokens")
        rules = [parse_acceptance(text) for text in args.acceptance]
        try:
            shapes = shapes_to_compare(args.trees, args.num_draft_tokens)
        except ValueError as error:
            raise ValueError(f"--trees: {error}") from None
    except ValueError as error:
        raise CommandError(str(error)) from None
    if args.ignore_recorded_verifier and not (args.bag and args.verifier):
        raise CommandError("--ignore-recorded-verifier goes with --bag and --verifier")
    from rosbags.highlevel import AnyReaderError

    from ..analysis.harness import (REPORT_STEM, DraftUnderTest, bag_episodes, bag_verifier, build_report, measure,
                                    trace_episodes, traces_verifier)
    from ..analysis.report import draft_train_accuracy, provenance
    from ..drafts.registry import load
    from ..vla.verifiers import load_verifier

    verifier_path = (traces_verifier(args.traces, args.verifier) if args.traces
                     else bag_verifier(args.bag, args.verifier, args.ignore_recorded_verifier))
    resolved = drafts_to_measure(args, verifier_path)  # cheap checks before anything loads
    apply_runtime_arguments(args)                      # CUDA present, --threads set
    verifier = load_verifier(verifier_path, args.device, args.dtype)
    try:
        episodes, data = trace_episodes(args.traces, verifier) if args.traces else bag_episodes(args.bag, verifier)
    except (ValueError, OSError, AnyReaderError) as error:
        raise CommandError(str(error)) from None
    drafts = [DraftUnderTest(f"{entry.kind} ({Path(entry.checkpoint).name})" if entry.checkpoint else entry.kind,
                             load(entry, verifier), entry.checkpoint, draft_train_accuracy(entry.config))
              for entry in resolved]
    measured = measure(drafts, episodes, verifier.model, rules, shapes, not args.no_progress)
    caption = provenance(verifier.name, args.device, verifier.dtype, data + "; draft ms measured here")
    report = build_report(measured, caption, args.output)
    report.write(args.output, REPORT_STEM)
    print(report.markdown(args.output))
    print(f"\nreport: {args.output / (REPORT_STEM + '.md')} (+ .json, .csv, .png)")
    return 0


def main(argv=None) -> int:
    """Exit status 0, or 2 after one line on stderr for an expected failure (bad argument, missing
    or contradicting input)."""
    args = build_parser().parse_args(argv)
    try:
        return harness(args)
    except expected_errors() as error:
        return fail("spec-vla-harness", error)


if __name__ == "__main__":
    sys.exit(main())
