"""`spec-vla-bench`: the package's benchmarks (commands that print tables, never timed tests).

Each subcommand's command line is commands/benchmarks/<name>.py (options, checks); it imports its
measurement from spec_vla_ros/benchmarks/ only to run, so `--help` and a bad argument load no
model stack."""
from __future__ import annotations

import importlib

from .arguments import ArgumentParser, use_defaults_in_help

# subcommand -> (command module with add_arguments(parser) and run(args), help)
BENCHMARKS = {
    "verifier": ("spec_vla_ros.commands.benchmarks.verifier", "verifier alone: load, prefill, per-token and per-action latency"),
    "full-size": ("spec_vla_ros.commands.benchmarks.full_size",
                  "OpenVLA-7B with random bf16 weights written in the released layout (~15 GB), loaded, one action"),
    "decode": ("spec_vla_ros.commands.benchmarks.decode", "AR vs drafts x acceptance rules x num_draft_tokens"),
    "cost": ("spec_vla_ros.commands.benchmarks.cost",
             "OpenVLA-7B cost model (computed): FLOPs, bytes, ms on a named GPU; prefill : pass : draft step"),
    "gpu": ("spec_vla_ros.commands.benchmarks.gpu",
            "one prepared GPU run: OpenVLA-7B with random bf16 weights, passes, AR vs speculative, JSON"),
    "ros": ("spec_vla_ros.commands.benchmarks.ros", "ROS overhead per action: image stamp -> action publish minus decode"),
    "dds": ("spec_vla_ros.commands.benchmarks.dds",
            "camera frames over DDS: received/sent per frame size, default transports vs what the launch files set"),
    "sim": ("spec_vla_ros.commands.benchmarks.sim", "LIBERO-GOAL simulator: s/step with and without rendering, s/episode, bridge overhead"),
}


def main(argv=None) -> None:
    parser = ArgumentParser(prog="spec-vla-bench", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        use_defaults_in_help(sub)              # defaults in --help, one-line errors
        sub.set_defaults(module_name=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    args = parser.parse_args(argv)
    importlib.import_module(args.module_name).run(args)


if __name__ == "__main__":
    main()
