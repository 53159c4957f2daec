"""Runs the package's commands as their console scripts do, in a fresh interpreter, and says which
modules of the model stack they loaded (test_command_startup.py, test_renderer_faults.py)."""
import ast
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_STACK = ("torch", "transformers", "timm")
# Runs one console script's entry point as its wrapper does (sys.argv, then main()), then writes the
# exit status and the model-stack modules loaded by then into the file named in $STARTUP_REPORT.
RUNNER = f"""
import importlib, json, os, sys
entry_point, *arguments = sys.argv[1:]
module, _, function = entry_point.partition(":")
sys.argv = [entry_point, *arguments]
try:
    code = getattr(importlib.import_module(module), function)()
except SystemExit as exit_:
    code = exit_.code
with open(os.environ["STARTUP_REPORT"], "w") as report:
    json.dump({{"code": code, "loaded": [name for name in {MODEL_STACK!r} if name in sys.modules]}}, report)
"""


def console_scripts() -> dict[str, str]:
    """{name: 'module:function'} of setup.py's console_scripts that are commands (spec-vla-*); the
    ROS executables (nodes) are not."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    entries = dict(item.split("=") for item in ast.literal_eval(value))
                    return {name.strip(): target.strip() for name, target in entries.items()
                            if name.strip().startswith("spec-vla-")}
    raise AssertionError("setup.py has no console_scripts")


COMMANDS = console_scripts()


def run_command(name: str, arguments: list[str], tmp_path: Path, environment: dict | None = None):
    """(completed process, exit status, model-stack modules loaded when it ended) of `name ARGUMENTS`
    run in `tmp_path` with `environment` (default: this one)."""
    report = tmp_path / f"startup_{uuid.uuid4().hex}.json"
    env = dict(os.environ if environment is None else environment, STARTUP_REPORT=str(report),
               PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run([sys.executable, "-c", RUNNER, COMMANDS[name], *arguments], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert report.exists(), completed.stderr[-3000:]
    result = json.loads(report.read_text())
    return completed, result["code"], result["loaded"]
