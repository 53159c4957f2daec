"""`spec-vla-launch CONFIGURATION [name:=value ...]`: the launch files' node graphs without
ROS 2's `launch` (not on PyPI). Reads the same spec_vla_ros.ros.launch_config.

The runner itself is spec_vla_ros/launcher.py; the node graphs are spec_vla_ros/launch_config.py.
"""
from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path

from ..ros.launch_config import CONFIGURATIONS, resolve
from ..ros.launcher import Launcher, check_nodes, node_command, parse_launch_arguments
from .arguments import ArgumentParser, fail


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="spec-vla-launch", description=__doc__.split("\n\n")[0],
        epilog="configurations: " + "; ".join(f"{name}: {c.description}" for name, c in CONFIGURATIONS.items()))
    parser.add_argument("configuration", choices=sorted(CONFIGURATIONS),
                        help="node graph to run (the launch file of the same name)")
    parser.add_argument("arguments", nargs="*", metavar="name:=value",
                        help="launch arguments, as for ros2 launch (--show-args lists them)")
    parser.add_argument("--log-dir", type=Path,
                        help="write each node's output to DIR/<node>.log (default: to this terminal)")
    parser.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    parser.add_argument("--print", action="store_true", help="print the node commands and exit")
    args, unknown = parser.parse_known_args(argv)
    options = [item for item in unknown if item.startswith("-")]
    if unknown and not options:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if options:                        # say what is expected, not only what is not
        return fail("spec-vla-launch", f"unknown option(s) {' '.join(options)}; expected "
                                       f"{parser.format_usage().removeprefix('usage: ')}")
    configuration = CONFIGURATIONS[args.configuration]
    if args.show_args:
        for argument in configuration.arguments:
            print(f"{argument.name}:={argument.default!r}\n    {argument.description}")
        return 0
    try:
        nodes = resolve(args.configuration, parse_launch_arguments(args.arguments))
        commands = [node_command(node) for node in nodes]
        check_nodes(nodes)
    except (ValueError, FileNotFoundError) as error:
        return fail("spec-vla-launch", error)
    if args.print:
        print("\n".join(shlex.join(command) for command in commands))
        return 0
    launcher = Launcher(nodes, log_dir=args.log_dir)
    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, lambda *_: launcher.stop_requested.set())
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
