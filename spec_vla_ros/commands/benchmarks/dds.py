"""`spec-vla-bench dds`'s command line: options; the measurement (a publisher and a subscriber
process per transport setting and frame size) is benchmarks/dds.py, which loads ROS only in its
roles' processes."""
from __future__ import annotations

import argparse

from ...benchmarks.dds import DEFAULT_SIZES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="frame sizes, WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=60, help="frames per size")
    parser.add_argument("--hz", type=float, default=15.0, help="publishing rate")
    parser.add_argument("--transports", nargs="+", default=["default", "package"], choices=["default", "package"],
                        help="default: Fast DDS's own transports; package: what the launch files and runner set")
    parser.add_argument("--publisher-prefix", default="", help="command prefix for the publisher process")
    parser.add_argument("--subscriber-prefix", default="", help="command prefix for the subscriber process")
    parser.add_argument("--discovery-range", default="", help="ROS_AUTOMATIC_DISCOVERY_RANGE for both processes "
                                                              "('' = as in this environment)")
    parser.add_argument("--json", help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ...benchmarks.dds import benchmark

    benchmark(args.sizes, args.frames, args.hz, args.transports, args.publisher_prefix, args.subscriber_prefix,
              args.discovery_range, args.json)
    return 0
