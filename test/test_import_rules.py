"""Imports run downward: the LIBERO bridge loads none of the model stack, and the ROS-free core
(vla, drafts, decoding, training, policy, the LIBERO wrapper) loads no ROS. Each check imports in a
fresh interpreter, so modules other tests imported do not hide a violation."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_STACK = ("torch", "timm", "transformers")
ROS = ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs", "std_srvs", "rcl_interfaces")
CORE_PACKAGES = ("spec_vla_ros.vla", "spec_vla_ros.drafts", "spec_vla_ros.decoding", "spec_vla_ros.training")


def loaded_after_importing(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    code = (f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
            f"print(' '.join(m for m in {watched!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def core_modules() -> list[str]:
    modules = ["spec_vla_ros.policy", "sim_bridge.libero_goal"]
    for package in CORE_PACKAGES:
        path = REPO_ROOT / Path(*package.split("."))
        modules += [f"{package}.{info.name}" for info in pkgutil.iter_modules([str(path)])]
    return modules


def test_the_bridge_node_loads_no_model_stack():
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    assert loaded_after_importing(["sim_bridge.bridge_node", "sim_bridge.results"], MODEL_STACK) == []


def test_the_core_loads_no_ros():
    modules = core_modules()
    assert len(modules) > 20                      # the walk found the packages' modules
    assert loaded_after_importing(modules, ROS) == []
