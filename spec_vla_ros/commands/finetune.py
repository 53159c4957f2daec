"""`spec-vla-finetune DEMOS... --out DIR`: the command line of verifier fine-tuning
(training/finetune.py, whose docstring is this command's --help description and whose
`finetune(args)` it runs). A bad argument or an expected failure is one line on stderr and exit
status 2. The model stack loads only once the arguments are parsed and checked."""
from __future__ import annotations

import argparse

from ..training.arguments import absolute_path
from ..training.demonstrations import demonstration_files
from ..vla.constants import DEFAULT_UNNORM_KEY, MINIATURE
from .arguments import ArgumentParser, add_runtime_arguments, library_constant, library_doc, run

FINETUNER = "spec_vla_ros.training.finetune"
TRAIN_STATE = library_constant(FINETUNER, "TRAIN_STATE")
TRAINABLE_PARTS = library_constant(FINETUNER, "TRAINABLE_PARTS")
LR_SCHEDULES = library_constant(FINETUNER, "LR_SCHEDULES")
COMPACT = library_constant("spec_vla_ros.vla.compact", "COMPACT")


def init_argument(text: str) -> str:
    """argparse type: `miniature`, `compact`, or an OpenVLA directory (with a config.json) made absolute."""
    if text in (MINIATURE, COMPACT):
        return text
    path = absolute_path(text)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"'{text}' is neither {MINIATURE} nor {COMPACT} nor an OpenVLA directory "
                                         "with a config.json")
    return str(path)


def parts_argument(text: str) -> str:
    """argparse type: 'all' or known part names, comma-separated (the library checks combinations)."""
    unknown = [name for name in text.split(",") if name.strip() not in TRAINABLE_PARTS]
    if text != "all" and unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}; expected 'all' or a comma-separated list of "
                                         f"{', '.join(TRAINABLE_PARTS)}")
    return text


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="spec-vla-finetune", description=library_doc(FINETUNER))
    parser.add_argument("demos", type=absolute_path, nargs="+",
                        help="LIBERO demonstration files (HDF5: data/demo_N/actions, obs/agentview_rgb) or "
                             "directories of them")
    parser.add_argument("--out", type=absolute_path, required=True,
                        help=f"the OpenVLA directory to write; one holding a {TRAIN_STATE} is resumed")
    parser.add_argument("--init", type=init_argument, default=MINIATURE,
                        help=f"starting point: {MINIATURE} (the embedded seeded miniature), {COMPACT} (the "
                             "laptop-training size, seeded random weights) or an OpenVLA directory")
    parser.add_argument("--train", type=parts_argument, default="all",
                        help=f"parts that learn: 'all' or a comma-separated list of {', '.join(TRAINABLE_PARTS)}; "
                             "without vision its features are computed once and cached")
    parser.add_argument("--unnorm-key", default=DEFAULT_UNNORM_KEY,
                        help="key of the dataset's statistics in dataset_statistics.json")
    parser.add_argument("--steps", type=int, default=5000, help="total optimizer steps (resumed runs count on)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warmup")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: none)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of each file's episodes (its last ones) held out")
    parser.add_argument("--val-samples", type=int, default=512, help="held-out frames evaluated (evenly spaced)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="minutes; then checkpoint and stop (rerun the command to resume); default: none")
    parser.add_argument("--no-center-crop", dest="center_crop", action="store_false",
                        help="train on the uncropped 224 px image, for evaluations run without center_crop "
                             "(center crop: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights (miniature, compact) and batch order")
    add_runtime_arguments(parser, "training precision: auto and float32 train in fp32; bfloat16/float16 run "
                                  "forward and backward under autocast (weights and optimizer stay fp32)")
    return parser


def finetune(args):
    """training.finetune.finetune(args), imported once the demonstration files are found (a missing
    one is one line at once): the library loads the model stack."""
    demonstration_files(args.demos)
    from ..training.finetune import finetune as run_finetune

    return run_finetune(args)


def main(argv=None) -> None:
    parser = build_parser()
    run(parser.prog, finetune, parser.parse_args(argv))


if __name__ == "__main__":
    main()
