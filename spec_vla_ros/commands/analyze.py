"""`spec-vla-analyze BAG`: the report of a recorded bag (spec_vla_ros/analysis/bag_analysis.py,
imported once the arguments are parsed: its report loads the model stack)."""
from __future__ import annotations

import sys
from pathlib import Path

from .arguments import ArgumentParser, fail, library_doc


def main(argv=None) -> int:
    parser = ArgumentParser(prog="spec-vla-analyze", description=library_doc("spec_vla_ros.analysis.bag_analysis"))
    parser.add_argument("bag", type=Path, help="bag directory (rosbag2, MCAP or SQLite)")
    parser.add_argument("--output", type=Path, help="report directory (default: <bag>_analysis)")
    args = parser.parse_args(argv)
    from rosbags.highlevel import AnyReaderError

    from ..analysis.bag_analysis import REPORT_STEM, analyze
    from ..analysis.bags import read_bag

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
