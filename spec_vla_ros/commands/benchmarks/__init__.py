"""The `spec-vla-bench` subcommands' command lines (commands/bench.py lists them): each module has
`add_arguments(parser)`, which needs no model stack, and `run(args)`, which checks what it can,
then imports its benchmark from spec_vla_ros/benchmarks/ (the measurement and the tables) and runs
it."""
