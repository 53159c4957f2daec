"""Imports run downward, and the folders show the layers:

- the core: vla/, drafts/, decoding/, training/, policy.py, policy_config.py, errors.py. It imports neither ROS
  (rclpy, message packages) nor the ROS layer (ros/), nor analysis/, benchmarks/ or commands/;
- ros/: everything that touches ROS; analysis/ and benchmarks/: libraries over the core;
- commands/: the command lines, which no other module imports (benchmarks/ included);
- the LIBERO bridge loads none of the model stack, and its wrapper (libero_goal.py) no ROS.

The load checks run in a fresh interpreter, so modules other tests imported do not hide a
violation; the layer checks read the source, so an import inside a function counts too."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_STACK = ("torch", "timm", "transformers")
ROS = ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs", "std_srvs", "rcl_interfaces")
CORE_PACKAGES = ("spec_vla_ros.vla", "spec_vla_ros.drafts", "spec_vla_ros.decoding", "spec_vla_ros.training")
CORE_MODULES = ("spec_vla_ros.policy", "spec_vla_ros.policy_config", "spec_vla_ros.errors")
COMMANDS = "spec_vla_ros.commands"
ROS_LAYER = "spec_vla_ros.ros"
# What each layer, named by its folders (packages) or modules, must not import, lazily or not.
LAYERS = {
    CORE_PACKAGES + CORE_MODULES: ROS + (ROS_LAYER, "spec_vla_ros.analysis", "spec_vla_ros.benchmarks", COMMANDS),
    ("spec_vla_ros.benchmarks",): (COMMANDS,),
}


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


def test_the_libero_wrapper_and_its_settings_load_no_model_stack_and_no_ros():
    modules = ["sim_bridge.libero_goal", "sim_bridge.constants", "sim_bridge.results", "sim_bridge.tables"]
    assert loaded_after_importing(modules, MODEL_STACK + ROS) == []
    # LIBERO's settings import nothing, so the core (training, control) may read them without a cycle
    assert imported_modules(REPO_ROOT / "sim_bridge" / "constants.py", "sim_bridge.constants") == set()


def test_the_core_loads_no_ros():
    modules = core_modules()
    assert len(modules) > 20                      # the walk found the packages' modules
    assert loaded_after_importing(modules, ROS) == []


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module `path` (the source of `module`) imports, relative imports made absolute, at
    any depth (lazy imports in functions included), and every string constant naming a
    spec_vla_ros module (importlib.import_module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("spec_vla_ros."):
            found.add(node.value)
    return found


def library_sources() -> dict[str, Path]:
    """Every module of spec_vla_ros outside commands/ (library, nodes, launch support) and of
    sim_bridge, by dotted name."""
    sources = {}
    for package in ("spec_vla_ros", "sim_bridge"):
        root = REPO_ROOT / package
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
            if name != COMMANDS and not name.startswith(COMMANDS + "."):
                sources[name] = path
    return sources


def test_no_library_module_imports_the_commands():
    sources = library_sources()
    assert len(sources) > 40 and {"spec_vla_ros.analysis.harness", "spec_vla_ros.ros.policy_node",
                                  "sim_bridge.bridge_node"} <= set(sources)      # the walk found them
    offenders = {module: sorted(name for name in imported_modules(path, module)
                                if name == COMMANDS or name.startswith(COMMANDS + "."))
                 for module, path in sources.items()}
    assert {module: names for module, names in offenders.items() if names} == {}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """`name` is one of `prefixes` or a module inside one."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layer_offenders(sources: dict[str, Path], layer: tuple[str, ...], forbidden: tuple[str, ...]) -> dict:
    """{module of `layer`: the `forbidden` modules its source imports} for each that imports any."""
    offenders = {module: sorted(name for name in imported_modules(path, module) if within(name, forbidden))
                 for module, path in sources.items() if within(module, layer)}
    return {module: names for module, names in offenders.items() if names}


@pytest.mark.parametrize("layer", list(LAYERS), ids=lambda layer: " ".join(name.split(".")[-1] for name in layer))
def test_each_layer_imports_nothing_above_it(layer):
    sources = library_sources()
    assert sum(within(module, layer) for module in sources) >= len(layer)     # the walk found the layer's modules
    assert layer_offenders(sources, layer, LAYERS[layer]) == {}


def test_the_layer_check_finds_a_lazy_ros_import_in_the_core(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("from ..vla.constants import ACTION_DIM\n"
                      "def publish():\n    import rclpy\n    from ..ros import topics\n")
    core = CORE_PACKAGES + CORE_MODULES
    assert layer_offenders({"spec_vla_ros.drafts.example": source}, core, LAYERS[core]) == {
        "spec_vla_ros.drafts.example": ["rclpy", "spec_vla_ros.ros", "spec_vla_ros.ros.topics"]}
    assert layer_offenders({"spec_vla_ros.ros.example": source}, core, LAYERS[core]) == {}   # ros/ may


def test_the_import_check_resolves_relative_imports(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("from .report import Table\nfrom ..commands.arguments import fail\n"
                      "def main():\n    from .. import commands\n")
    assert imported_modules(source, "spec_vla_ros.analysis.example") == {
        "spec_vla_ros.analysis.report", "spec_vla_ros.analysis.report.Table", "spec_vla_ros.commands.arguments",
        "spec_vla_ros.commands.arguments.fail", "spec_vla_ros", "spec_vla_ros.commands"}
