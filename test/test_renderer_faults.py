"""A renderer that cannot start, met as a user meets it: every command that starts one
(spec-vla-eval, spec-vla-demo, spec-vla-bench sim, spec-vla-collect --source libero, the bridge
node) says so in one line on stderr and exits 2 before anything else runs (no model stack loaded,
no node, no output directory), with advice that fits what it found: the valid EGL device ids, the
variables that conflict, the display glx needs, and a Debian package only where it is missing."""
import ctypes.util
import os
import re
import subprocess
import sys

import pytest

from command_runner import REPO_ROOT, run_command

pytestmark = pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no libEGL here: every case differs")

COMMANDS_THAT_RENDER = {
    "spec-vla-eval": ["--tasks", "0", "--episodes", "1"],
    "spec-vla-demo": [],
    "spec-vla-bench": ["sim", "--skip-bridge"],
    "spec-vla-collect": ["traces", "--source", "libero"],
}
VALID_IDS = re.compile(r"valid ids here: 0(-\d+)?$")


def environment(**variables) -> dict:
    """This environment without the renderer's variables, then `variables` (None: left unset)."""
    base = {name: value for name, value in os.environ.items()
            if name not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "MUJOCO_EGL_DEVICE_ID", "CUDA_VISIBLE_DEVICES",
                            "DISPLAY")}
    return {**base, **{name: value for name, value in variables.items() if value is not None}}


def refused(name: str, arguments: list[str], tmp_path, **variables) -> str:
    """Run the command with a bad renderer; assert exit 2, one line, no model stack, nothing made;
    return the line."""
    completed, code, loaded = run_command(name, arguments, tmp_path, environment(**variables))
    lines = completed.stderr.splitlines()
    assert code == 2 and len(lines) == 1, (code, completed.stderr[-3000:])
    assert lines[0].startswith(name) and "Traceback" not in completed.stderr
    assert loaded == [], f"{name} loaded {loaded} before refusing the renderer"
    assert not [path for path in tmp_path.iterdir() if not path.name.startswith("startup_")], "it made files"
    return lines[0]


@pytest.mark.parametrize("name", sorted(COMMANDS_THAT_RENDER))
def test_an_egl_device_id_out_of_range_is_refused_with_the_valid_ids(name, tmp_path):
    line = refused(name, COMMANDS_THAT_RENDER[name], tmp_path, MUJOCO_EGL_DEVICE_ID="99")
    assert "MUJOCO_EGL_DEVICE_ID='99' is out of range" in line and VALID_IDS.search(line), line
    assert "apt-get" not in line                       # libEGL is installed: nothing to install


@pytest.mark.parametrize("variables, expected", [
    ({"MUJOCO_EGL_DEVICE_ID": "first"}, "MUJOCO_EGL_DEVICE_ID='first' is not a device number"),
    # robosuite renders on CUDA_VISIBLE_DEVICES' device when MUJOCO_EGL_DEVICE_ID is unset; '' hides all GPUs
    ({"CUDA_VISIBLE_DEVICES": ""}, "CUDA_VISIBLE_DEVICES='' is not a device number"),
    ({"CUDA_VISIBLE_DEVICES": "99"}, "CUDA_VISIBLE_DEVICES='99' is out of range"),
])
def test_what_robosuite_reads_as_the_egl_device_is_checked(variables, expected, tmp_path):
    line = refused("spec-vla-eval", COMMANDS_THAT_RENDER["spec-vla-eval"], tmp_path, **variables)
    assert expected in line and "set MUJOCO_EGL_DEVICE_ID" in line and VALID_IDS.search(line), line


def test_a_conflicting_pyopengl_platform_names_both_variables(tmp_path):
    line = refused("spec-vla-eval", COMMANDS_THAT_RENDER["spec-vla-eval"], tmp_path,
                   MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
    assert "PYOPENGL_PLATFORM=osmesa conflicts with MUJOCO_GL=egl" in line and "unset PYOPENGL_PLATFORM" in line
    assert "apt-get" not in line


def test_glx_without_a_display_says_so_and_names_the_headless_renderers(tmp_path):
    line = refused("spec-vla-demo", [], tmp_path, MUJOCO_GL="glx")
    assert "MUJOCO_GL=glx" in line and "DISPLAY is not set" in line and "MUJOCO_GL=egl" in line
    assert "apt-get" not in line


def test_an_unknown_renderer_lists_the_ones_that_work(tmp_path):
    line = refused("spec-vla-bench", COMMANDS_THAT_RENDER["spec-vla-bench"], tmp_path, MUJOCO_GL="wgl")
    assert "MUJOCO_GL=wgl" in line and all(name in line for name in ("egl", "osmesa", "glx"))


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_a_missing_library_names_its_package_and_the_renderer_that_is_here(tmp_path):
    line = refused("spec-vla-collect", COMMANDS_THAT_RENDER["spec-vla-collect"], tmp_path, MUJOCO_GL="osmesa")
    assert "MUJOCO_GL=osmesa needs libOSMesa" in line and "apt-get install -y libosmesa6" in line
    assert "MUJOCO_GL=egl" in line                       # libEGL is here


def test_the_bridge_node_refuses_in_one_line_before_it_starts(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not installed")
    env = environment(MUJOCO_EGL_DEVICE_ID="99", ROS_DOMAIN_ID=str(150 + os.getpid() % 50),
                      PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    completed = subprocess.run([sys.executable, "-m", "sim_bridge.bridge_node", "--ros-args", "-p",
                                f"results_dir:={tmp_path / 'results'}"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = (completed.stdout + completed.stderr).splitlines()
    assert completed.returncode == 2 and len(lines) == 1, completed.stdout + completed.stderr
    assert "[FATAL]" in lines[0] and "MUJOCO_EGL_DEVICE_ID='99' is out of range" in lines[0]
    assert VALID_IDS.search(lines[0]) and not (tmp_path / "results").exists()


def test_a_working_renderer_passes(tmp_path):
    """The same check, with nothing wrong, names the backend (and leaves the variables as they were)."""
    code = ("import os; from sim_bridge.libero_goal import check_headless_rendering as check; "
            "print(check(), os.environ.get('MUJOCO_EGL_DEVICE_ID'))")
    for variables, expected in (({}, "egl None"), ({"MUJOCO_EGL_DEVICE_ID": "0"}, "egl 0")):
        completed = subprocess.run([sys.executable, "-c", code], env=environment(**variables, PYTHONPATH=str(REPO_ROOT)),
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0 and completed.stdout.split("\n")[0] == expected, completed.stderr
