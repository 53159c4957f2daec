"""`spec-vla-analyze BAG`: the report of a recorded bag (spec_vla_ros/analysis/bag_analysis.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from rosbags.highlevel import AnyReaderError

from ..analysis import bag_analysis
from ..analysis.bag_analysis import REPORT_STEM, analyze
from ..analysis.bags import read_bag
from .arguments import ArgumentParser, fail


def main(argv=None) -> int:
    parser = ArgumentParser(prog="spec-vla-analyze", description=bag_analysis.__doc__)
    parser.add_argument("bag", type=Path, help="bag directory (rosbag2, MCAP or SQLite)")
    parser.add_argument("--output", type=Path, help="report directory (default: <bag>_analysis)")
    args = parser.parse_args(argv)
    output = args.output or args.bag.with_name(args.bag.name + "_analysis")
    try:
        run = read_bag(args.bag)
        for notice in run.notices:
            print(f"spec-vla-analyze: {notice}", file=sys.stderr)
        report = analyze(run, output)
    except (ValueError, OSError, AnyReaderError) as error:
        return fail("spec-vla-analyze", error)
    report.write(output, REPORT_STEM)
    print(report.markdown(output))
    print(f"\nreport: {output / (REPORT_STEM + '.md')} (+ .json, .csv, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
