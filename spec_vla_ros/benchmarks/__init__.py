"""The `spec-vla-bench` subcommands (commands/bench.py): each module has `add_arguments(parser)`
and `run(args)`, prints its tables and returns its numbers; benchmarks, never timed tests."""
