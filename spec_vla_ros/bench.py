"""`spec-vla-bench`: the package's benchmarks (commands that print tables, never timed tests)."""
from __future__ import annotations

import argparse
import importlib

# subcommand -> (module with add_arguments(parser) and run(args), help)
BENCHMARKS = {
    "verifier": ("spec_vla_ros.vla.benchmark", "verifier alone: load, prefill, per-token and per-action latency"),
    "decode": ("spec_vla_ros.decoding.benchmark", "AR vs drafts x acceptance rules x num_draft_tokens"),
    "ros": ("spec_vla_ros.ros_benchmark", "ROS overhead per action: image stamp -> action publish minus decode"),
    "sim": ("sim_bridge.benchmark", "LIBERO-GOAL simulator: s/step with and without rendering, s/episode, bridge overhead"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="spec-vla-bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        sub = subparsers.add_parser(name, help=help_text)
        sub.set_defaults(module_name=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    args = parser.parse_args(argv)
    importlib.import_module(args.module_name).run(args)


if __name__ == "__main__":
    main()
