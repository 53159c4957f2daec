"""`spec-vla-bench ros`'s command line: options; the measurement (a policy node over real DDS) is
benchmarks/ros.py (imported only to run). The policy settings not given here are those of the
libero_goal parameters file (config/libero_goal.yaml), which the node reads."""
from __future__ import annotations

import argparse

from sim_bridge.constants import LIBERO_RENDER_SIZE

from ...vla.threads import DEFAULT_THREADS, THREADS_HELP
from ..arguments import use_defaults_in_help

AS_THE_PARAMETERS_FILE = " (default: as config/libero_goal.yaml sets it)"
POLICY_SETTINGS = ("draft", "draft_checkpoint", "verifier", "device")     # options that override that file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actions", type=int, default=50, help="timed actions")
    parser.add_argument("--warmup", type=int, default=5, help="untimed actions first")
    parser.add_argument("--image-size", type=int, default=LIBERO_RENDER_SIZE, help="square rgb8 frames (px)")
    parser.add_argument("--draft", help="ar (autoregressive) | mamba | llama | history" + AS_THE_PARAMETERS_FILE)
    parser.add_argument("--draft-checkpoint", help="draft checkpoint directory ('' = the packaged one for the "
                                                   "miniature)" + AS_THE_PARAMETERS_FILE)
    parser.add_argument("--verifier", help="'miniature' or an OpenVLA directory" + AS_THE_PARAMETERS_FILE)
    parser.add_argument("--device", help="cpu or cuda" + AS_THE_PARAMETERS_FILE)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP + " (policy node)")
    use_defaults_in_help(parser)


def run(args: argparse.Namespace) -> int:
    from ...benchmarks.ros import policy_node, print_results, ros_overhead
    from ...ros.launcher import node_settings

    parameters = {name: getattr(args, name) for name in POLICY_SETTINGS if getattr(args, name) is not None}
    parameters["threads"] = args.threads
    results = ros_overhead(args.actions, args.warmup, args.image_size, parameters)
    print_results(results, args.image_size, node_settings(policy_node(parameters)), args.actions)
    return 0
