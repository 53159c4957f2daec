"""How many CPU threads torch uses in a process that runs the model: one setting for the policy
node (`threads` parameter) and every command that runs the model (`--threads`).

Default 1: on the 2-core machines this package is developed on, shared with the LIBERO simulator
and DDS, torch's default (one thread per core, plus inter-op threads) made the miniature's
verifier up to ~18x slower per action (measured with `spec-vla-bench verifier --actions 10` beside
other work: 176 ms with 1 thread, 1012 ms with 2, 3264 ms with torch's default), because the
threads wait for cores that other processes hold. 0 keeps torch's default,
for a machine with cores to spare. On CUDA the setting only affects CPU-side work.
"""
from __future__ import annotations

DEFAULT_THREADS = 1
THREADS_HELP = ("torch CPU threads for the model (torch.set_num_threads); 0 = torch's default (one per core); "
                "1 is fastest on a 2-core machine shared with the simulator and DDS")


def check_threads(threads: int) -> int:
    """ValueError unless `threads` is an int >= 0."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (0 = torch's default), got {threads!r}")
    return threads


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads (0: leave torch's default); returns the number in use."""
    import torch        # here, so that command lines read DEFAULT_THREADS without the model stack

    if check_threads(threads):
        torch.set_num_threads(threads)
    return torch.get_num_threads()
