"""Shared fixtures: the embedded miniature verifier is built once per test session (~5 s)."""
import numpy as np
import pytest


@pytest.fixture(scope="session")
def miniature():
    from spec_vla_ros.vla.checkpoint import build_miniature
    return build_miniature()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
