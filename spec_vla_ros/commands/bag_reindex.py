"""`spec-vla-bag-reindex BAG`: make a bag whose recorder was killed complete again.

A recorder stopped by SIGKILL or a power cut leaves an MCAP file without its summary and no
metadata.yaml, which rosbags, `ros2 bag` and mcap's indexed reader refuse. This reads every
message that reached the disk (mcap's non-seeking reader) and writes them, with their topics,
types, definitions, offered QoS and receive times, into a new complete bag (MCAP summary and
metadata.yaml), as `ros2 bag reindex` does. The unfinished bag is left as it is.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .arguments import ArgumentParser


def main(argv=None) -> int:
    parser = ArgumentParser(prog="spec-vla-bag-reindex", description=__doc__)
    parser.add_argument("bag", type=Path, help="unfinished bag directory (rosbag2, MCAP)")
    parser.add_argument("--output", type=Path, help="new bag directory (default: <bag>_reindexed; must not exist)")
    args = parser.parse_args(argv)
    from rosbags.rosbag2 import WriterError

    from ..analysis.bags import reindex_bag

    try:
        output, written, recovery = reindex_bag(args.bag, args.output)
    except (ValueError, OSError, WriterError) as error:
        print(f"spec-vla-bag-reindex: {error}", file=sys.stderr)
        return 2
    print(f"spec-vla-bag-reindex: {recovery.notice(args.bag).split('; `')[0]}")
    print(f"wrote {written} messages to the complete bag {output} ({args.bag} is unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
