"""What every command line of the package shares: help that shows defaults, one-line errors.

`ArgumentParser` is argparse's, with two changes: `--help` prints each option's default after
its help text (argparse.ArgumentDefaultsHelpFormatter; descriptions keep their line breaks), and
a bad argument is one line on stderr, `PROG: error: WHAT (see PROG --help)`, exit code 2, instead
of the usage block. `fail()` is the same line for errors found after parsing.
"""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2           # bad argument, missing or mismatched checkpoint, existing output: nothing was started


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; '(default: X)' after every option's help. An option whose default
    is None says in its own help what happens without it (argparse would print 'default: None')."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """argparse calls this for a bad command line: one line and exit 2, never the usage block."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def use_defaults_in_help(parser: argparse.ArgumentParser) -> None:
    """For a parser made elsewhere (a subcommand's): the same help and error behaviour."""
    parser.formatter_class = HelpFormatter
    parser.error = ArgumentParser.error.__get__(parser)


def fail(prog: str, message) -> int:
    """Print `PROG: MESSAGE` as one line on stderr; returns EXIT_USAGE for `return fail(...)`."""
    print(f"{prog}: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


def one_line(message) -> str:
    """A message or exception's text on one line (rcl and rclpy messages may span several)."""
    return " ".join(str(message).split()) or type(message).__name__
