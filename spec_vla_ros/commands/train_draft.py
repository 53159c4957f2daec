"""`spec-vla-train-draft`: the command line of draft training (training/train.py, whose
docstring is this command's --help description and whose `train(args)` it runs). A bad
argument or an expected failure is one line on stderr and exit status 2. The trainer (and the
model stack) loads only once the arguments are parsed."""
from __future__ import annotations

import argparse

from ..drafts.kinds import CHECKPOINT_KINDS
from ..training.arguments import absolute_path
from .arguments import OneLineParser, add_runtime_arguments, library_constant, library_doc, run, verifier_argument

TRAINER = "spec_vla_ros.training.train"
DEFAULT_CONTEXT = library_constant("spec_vla_ros.drafts.eagle_head", "DEFAULT_CONTEXT")
MAMBA_D_STATE = library_constant("spec_vla_ros.drafts.mamba", "MAMBA_D_STATE")
MAMBA_EXPAND = library_constant("spec_vla_ros.drafts.mamba", "MAMBA_EXPAND")
TRAIN_STATE = library_constant(TRAINER, "TRAIN_STATE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("traces", type=absolute_path, nargs="+", help="trace directories from spec-vla-collect")
    parser.add_argument("--kind", choices=CHECKPOINT_KINDS, required=True)
    parser.add_argument("--out", type=absolute_path, required=True,
                        help="new checkpoint directory (draft.json, draft.safetensors); with --resume, the one "
                             "to continue")
    parser.add_argument("--verifier", type=verifier_argument, default=None,
                        help="'miniature' or an OpenVLA HF directory; default: the one the traces' manifest names "
                             "(a different one is refused)")
    add_runtime_arguments(parser, "training precision: auto and float32 train in fp32; bfloat16/float16 run the "
                                  "head under autocast (weights and optimizer stay fp32)")
    parser.add_argument("--layers", type=int, default=1, help="mamba: number of Mamba blocks")
    parser.add_argument("--d-state", type=int, default=MAMBA_D_STATE,
                        help=f"mamba: SSM state size per channel (default {MAMBA_D_STATE}, mamba_simple's)")
    parser.add_argument("--expand", type=int, default=MAMBA_EXPAND,
                        help=f"mamba: inner width / model width (default {MAMBA_EXPAND}, mamba_simple's)")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT,
                        help="prompt positions the head reads (the last ones); 0: the whole prompt")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.05, help="input-feature noise, relative to their RMS")
    parser.add_argument("--chain-weight", type=float, default=1.0,
                        help="weight of the loss on drafting from a0 with the head's own predictions (0: off)")
    parser.add_argument("--carry", action="store_true",
                        help="also train guessing the next control step's action from this one (early proposals)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="fraction of episodes held out")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help=f"continue from --out's {TRAIN_STATE}")


def train(args):
    """training.train.train(args), imported here: it loads the model stack."""
    from ..training.train import train as train_draft

    return train_draft(args)


def main(argv=None) -> None:
    parser = OneLineParser(prog="spec-vla-train-draft", description=library_doc(TRAINER),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run(parser.prog, train, parser.parse_args(argv))


if __name__ == "__main__":
    main()
