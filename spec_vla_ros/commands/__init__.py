"""The package's command-line tools, apart from the library they drive (library modules never
import this package). Each parses and checks its arguments before it imports its library, so
`--help` and a bad argument load no model stack (test/test_command_startup.py). Each console
script (setup.py) and the module that holds its `main`:

| command | module |
|---|---|
| `spec-vla-collect` | commands/collect.py |
| `spec-vla-train-draft` | commands/train_draft.py |
| `spec-vla-eval` | commands/eval.py |
| `spec-vla-harness` | commands/harness.py |
| `spec-vla-write-miniature` | commands/write_miniature.py |
| `spec-vla-bench SUBCOMMAND` | commands/bench.py |
| `spec-vla-bench verifier / full-size / decode / cost / gpu / sim / ros / dds` | commands/benchmarks/{verifier, full_size, decode, cost, gpu, sim, ros, dds}.py (the measurements: spec_vla_ros/benchmarks/) |
| `spec-vla-keystore` | commands/keystore.py |
| `spec-vla-launch` | commands/launch.py (the runner itself: ros/launcher.py) |
| `spec-vla-demo` | commands/demo.py |
| `spec-vla-analyze` | commands/analyze.py (the analysis: analysis/bag_analysis.py) |
| `spec-vla-bag-reindex` | commands/bag_reindex.py |

The ROS 2 executables (`policy_node`, `libero_bridge_node`, `bag_recorder`) are the nodes' own
modules (ros/policy_node.py, sim_bridge/bridge_node.py, ros/recorder_node.py).

commands/arguments.py: what the command lines share (one-line errors, defaults in --help, the
option types several commands spell alike, a library's docstring and defaults read without
importing it).
"""
