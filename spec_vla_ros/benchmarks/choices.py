"""What the benchmarks offer by name, without the model stack: their command lines
(commands/benchmarks/) list these as choices before anything loads, and the benchmarks use them."""

GPU_ARCHES = ("openvla-7b", "tiny")          # spec-vla-bench gpu --arch: gpu.architecture(name)
