"""Scripted-expert demonstrations of LIBERO-GOAL tasks, stored in LIBERO's own HDF5 layout.

One file per task, `<task name>_demo.hdf5`, as LIBERO's datasets name them, so code that reads LIBERO's
official libero_goal demonstrations reads these the same way:

    data                        attrs: env_name, problem_info (JSON), macros_image_convention,
                                       bddl_file_name, bddl_file_content, env_args (JSON), num_demos, total
    data/demo_N/actions         (T, 7) float64, LIBERO's controller convention (gripper -1 open, +1 close)
    data/demo_N/states          (T, S) flattened MuJoCo states, the one each action was taken in
    data/demo_N/robot_states    (T, 9) gripper qpos, end-effector position and quaternion
    data/demo_N/rewards, dones  (T,) uint8, 1 at the last step only
    data/demo_N/obs/agentview_rgb   (T, H, W, 3) uint8 as robosuite renders it (OpenGL convention:
                                    upside down; macros_image_convention says so)
    data/demo_N/obs/eye_in_hand_rgb (only when the wrist camera is recorded)
    data/demo_N/obs/gripper_states, joint_states, ee_pos, ee_ori (axis-angle), ee_states (pos + ori)
    data/demo_N                 attrs: num_samples, model_file (MuJoCo XML), init_state, and where the
                                demonstration came from (initial state index, attempt, seed, noise)

What is kept: successful episodes only, without no-op steps as OpenVLA's `*_no_noops` datasets drop them
(pose part of the action ~0 and gripper equal to the last kept action's). Actions are the expert's own
(its label); with noise injection the states are those the noisy execution visited (DART). Episodes are
rolled out without rendering; the kept steps' camera images are rendered afterwards from their states.

Files are appended to, and every attempt (failed ones too) is logged in `data.attrs["expert_attempts"]`,
so an interrupted recording resumes where it stopped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from spec_vla_ros.vla.gripper import to_libero_gripper


NOOP_THRESHOLD = 1e-4                   # OpenVLA's no-op filter: norm of the pose part below this
ATTEMPTS_ATTR = "expert_attempts"
OBS_ARRAYS = ("agentview_rgb", "eye_in_hand_rgb", "gripper_states", "joint_states", "ee_pos", "ee_ori")


def to_libero_actions(labels: np.ndarray) -> np.ndarray:
    """The expert's actions (OpenVLA's gripper: 1 open, 0 close) in LIBERO's convention (-1 open, +1 close)."""
    actions = np.array(labels, dtype=np.float64, copy=True)
    actions[:, 6] = [to_libero_gripper(value) for value in actions[:, 6]]
    return actions


def keep_mask(actions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> np.ndarray:
    """Which steps OpenVLA's no-op filter keeps: a step is dropped when its pose part is ~0 and its gripper
    equals that of the last kept step (the first step: when its pose part is ~0)."""
    keep = np.zeros(len(actions), dtype=bool)
    last_kept = None
    for index, action in enumerate(actions):
        still = np.linalg.norm(action[:-1]) < threshold
        noop = still if last_kept is None else still and action[-1] == last_kept[-1]
        if not noop:
            keep[index] = True
            last_kept = action
    return keep


@dataclass
class Demonstration:
    """One demo_N group's arrays and attributes (what the writer writes and the reader returns)."""
    actions: np.ndarray
    states: np.ndarray
    robot_states: np.ndarray
    obs: dict[str, np.ndarray]
    model_file: str = ""
    attrs: dict = field(default_factory=dict)   # where it came from: init_state_index, attempt, seed, noise

    def __post_init__(self):
        steps = len(self.actions)
        lengths = {name: len(array) for name, array in [("states", self.states), ("robot_states", self.robot_states),
                                                        *self.obs.items()]}
        if steps == 0 or any(length != steps for length in lengths.values()):
            raise ValueError(f"a demonstration needs the same number (> 0) of actions, states and observations; "
                             f"got {steps} actions and {lengths}")
        unknown = set(self.obs) - set(OBS_ARRAYS)
        if unknown:
            raise ValueError(f"unknown observation arrays {sorted(unknown)}; expected some of {OBS_ARRAYS}")

    @property
    def num_samples(self) -> int:
        return len(self.actions)


@dataclass
class DemoFileInfo:
    """The `data` group's attributes that describe the task and its env."""
    env_name: str
    problem_info: dict
    bddl_file_name: str
    bddl_file_content: str
    env_args: dict
    macros_image_convention: str = "opengl"


def demo_file_name(task_name: str) -> str:
    return f"{task_name}_demo.hdf5"


class DemonstrationWriter:
    """Appends demonstrations to a LIBERO-layout file (created with `info` if missing)."""

    def __init__(self, path: str | Path, info: DemoFileInfo):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "a")
        data = self._file.require_group("data")
        if "env_args" not in data.attrs:
            data.attrs.update(env_name=info.env_name, problem_info=json.dumps(info.problem_info),
                              macros_image_convention=info.macros_image_convention,
                              bddl_file_name=info.bddl_file_name, bddl_file_content=info.bddl_file_content,
                              env_args=json.dumps(info.env_args), num_demos=0, total=0)
            data.attrs[ATTEMPTS_ATTR] = "[]"
        elif json.loads(data.attrs["problem_info"]).get("problem_name") != info.problem_info.get("problem_name"):
            raise ValueError(f"{self.path} holds demonstrations of another problem "
                             f"({json.loads(data.attrs['problem_info']).get('problem_name')}), not "
                             f"{info.problem_info.get('problem_name')}")
        self._data = data

    @property
    def attempts(self) -> list[dict]:
        """Every attempt recorded so far: init_state, attempt, success, steps, kept (steps written)."""
        return json.loads(self._data.attrs[ATTEMPTS_ATTR])

    def attempted(self, init_state: int, attempt: int) -> bool:
        return any(a["init_state"] == init_state and a["attempt"] == attempt for a in self.attempts)

    @property
    def num_demos(self) -> int:
        return int(self._data.attrs["num_demos"])

    def append(self, demo: Demonstration) -> str:
        """Write `demo` as the next demo_N; returns its name."""
        name = f"demo_{self.num_demos}"
        group = self._data.create_group(name)
        group.create_dataset("actions", data=demo.actions)
        group.create_dataset("states", data=demo.states)
        group.create_dataset("robot_states", data=demo.robot_states)
        done = np.zeros(demo.num_samples, dtype=np.uint8)
        done[-1] = 1
        group.create_dataset("rewards", data=done)
        group.create_dataset("dones", data=done)
        obs = group.create_group("obs")
        for key, array in demo.obs.items():
            obs.create_dataset(key, data=array)
        if "ee_pos" in demo.obs and "ee_ori" in demo.obs:
            obs.create_dataset("ee_states", data=np.hstack([demo.obs["ee_pos"], demo.obs["ee_ori"]]))
        group.attrs.update(num_samples=demo.num_samples, model_file=demo.model_file, init_state=demo.states[0],
                           **{key: value for key, value in demo.attrs.items()})
        self._data.attrs["num_demos"] = self.num_demos + 1
        self._data.attrs["total"] = int(self._data.attrs["total"]) + demo.num_samples
        self._file.flush()
        return name

    def log_attempt(self, init_state: int, attempt: int, success: bool, steps: int, kept: int) -> None:
        attempts = self.attempts + [dict(init_state=init_state, attempt=attempt, success=bool(success),
                                         steps=int(steps), kept=int(kept))]
        self._data.attrs[ATTEMPTS_ATTR] = json.dumps(attempts)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_demonstrations(path: str | Path) -> tuple[DemoFileInfo, list[Demonstration]]:
    """The file's task description and its demonstrations, demo_0 first (LIBERO's official files too)."""
    with h5py.File(path, "r") as file:
        data = file["data"]
        attrs = data.attrs
        info = DemoFileInfo(env_name=str(attrs.get("env_name", "")),
                            problem_info=json.loads(attrs.get("problem_info", "{}")),
                            bddl_file_name=str(attrs.get("bddl_file_name", "")),
                            bddl_file_content=str(attrs.get("bddl_file_content", "")),
                            env_args=json.loads(attrs.get("env_args", "{}")),
                            macros_image_convention=str(attrs.get("macros_image_convention", "opengl")))
        names = sorted((key for key in data if key.startswith("demo_")), key=lambda key: int(key.split("_")[1]))
        demos = []
        for name in names:
            group = data[name]
            extra = {key: _plain(value) for key, value in group.attrs.items()
                     if key not in ("num_samples", "model_file", "init_state")}
            demos.append(Demonstration(
                actions=group["actions"][()], states=group["states"][()],
                robot_states=group["robot_states"][()] if "robot_states" in group else np.zeros((len(group["actions"]), 0)),
                obs={key: group["obs"][key][()] for key in OBS_ARRAYS if key in group["obs"]},
                model_file=str(group.attrs.get("model_file", "")), attrs=extra))
    return info, demos


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# --- recording from the simulator ---------------------------------------------------------------

def demo_file_info(env, task_id: int) -> DemoFileInfo:
    """The `data` attributes for a task of a LiberoGoalEnv, as LIBERO's dataset scripts write them."""
    task_env = env.task_env(task_id)
    bddl_file_name = env.bddl_file(task_id)
    problem_info = {"problem_name": task_env.problem_name, "domain_name": task_env.domain_name,
                    "language_instruction": task_env.language_instruction}
    env_kwargs = {"bddl_file_name": bddl_file_name, "camera_heights": env.image_size, "camera_widths": env.image_size,
                  "control_freq": 20}
    return DemoFileInfo(env_name=type(task_env.env).__name__, problem_info=problem_info,
                        bddl_file_name=bddl_file_name, bddl_file_content=Path(bddl_file_name).read_text(),
                        env_args={"type": 1, "env_name": type(task_env.env).__name__,
                                  "problem_name": task_env.problem_name, "bddl_file": bddl_file_name,
                                  "env_kwargs": env_kwargs})


def render_frames(env, task_id: int, states: np.ndarray, wrist: bool) -> dict[str, np.ndarray]:
    """The agentview (and wrist) images of `states`, as the env's camera observations give them."""
    task_env = env.task_env(task_id)
    cameras = {"agentview_rgb": "agentview_image"} | ({"eye_in_hand_rgb": "robot0_eye_in_hand_image"} if wrist else {})
    for observable in cameras.values():
        task_env.env.modify_observable(observable, "enabled", True)
    try:
        frames = {key: [] for key in cameras}
        for state in states:
            raw = task_env.regenerate_obs_from_state(state)
            for key, observable in cameras.items():
                frames[key].append(raw[observable].copy())
    finally:
        for observable in cameras.values():
            task_env.env.modify_observable(observable, "enabled", env.render)
    return {key: np.stack(images) for key, images in frames.items()}


def demonstration_from_episode(env, task_id: int, episode, wrist: bool = False, **attrs) -> Demonstration:
    """The kept steps of a successful ExpertEpisode, their images rendered."""
    from robosuite.utils.transform_utils import quat2axisangle

    actions = to_libero_actions(episode.actions)
    keep = keep_mask(actions)
    robot = [state for state, kept in zip(episode.robot, keep) if kept]
    states = episode.states[keep]
    obs = render_frames(env, task_id, states, wrist)
    obs.update(gripper_states=np.stack([r.gripper_qpos for r in robot]),
               joint_states=np.stack([r.joint_pos for r in robot]),
               ee_pos=np.stack([r.eef_pos for r in robot]),
               ee_ori=np.stack([quat2axisangle(r.eef_quat) for r in robot]))
    robot_states = np.stack([np.concatenate([r.gripper_qpos, r.eef_pos, r.eef_quat]) for r in robot])
    return Demonstration(actions=actions[keep], states=states, robot_states=robot_states, obs=obs,
                         model_file=env.task_env(task_id).sim.model.get_xml(), attrs=attrs)


def attempt_seed(seed: int, task_id: int, init_state: int, attempt: int) -> int:
    return int(np.random.SeedSequence([seed, task_id, init_state, attempt]).generate_state(1)[0])


def record_task(env, task_id: int, init_states, attempts: int, out_dir: str | Path, noise: float = 0.0,
                seed: int = 0, wrist: bool = False, progress=None) -> dict:
    """Roll the expert out from each initial state `attempts` times (fixtures placed and noise drawn from
    seeds of their own), keep the successful episodes; skip what the task's file already logs. The env
    must use per-episode seeding. Returns counts for this call."""
    from .expert import ExpertSettings, run_expert_episode

    if env.seeding != "per_episode":
        raise ValueError("record_task needs LiberoGoalEnv(seeding='per_episode'): each attempt sets its own seed")
    path = Path(out_dir) / demo_file_name(env.tasks[task_id].name)
    counts = dict(task_id=task_id, path=str(path), attempted=0, successes=0, skipped=0, frames=0)
    with DemonstrationWriter(path, demo_file_info(env, task_id)) as writer:
        for init_state in init_states:
            for attempt in range(attempts):
                if writer.attempted(init_state, attempt):
                    counts["skipped"] += 1
                else:
                    env.seed = seed + 1000 * attempt            # per-episode seeding: seed + init_state
                    settings = ExpertSettings(noise=noise, seed=attempt_seed(seed, task_id, init_state, attempt))
                    episode = run_expert_episode(env, task_id, init_state, settings)
                    kept = 0
                    if episode.success:
                        demo = demonstration_from_episode(
                            env, task_id, episode, wrist, init_state_index=init_state, attempt=attempt,
                            env_seed=env.seed, noise=noise, noise_seed=settings.seed or 0, libero_goal_task_id=task_id)
                        writer.append(demo)
                        kept = demo.num_samples
                    writer.log_attempt(init_state, attempt, episode.success, episode.record["steps"], kept)
                    counts["attempted"] += 1
                    counts["successes"] += episode.success
                    counts["frames"] += kept
                if progress is not None:
                    progress(1)
        counts["demos_in_file"] = writer.num_demos
    return counts


def record_tasks(tasks: list[int], options: dict) -> list[dict]:
    """Record `tasks` in this process (one LIBERO env, no rendering between recorded frames);
    `options`: init_states, attempts, noise, seed, wrist, image_size (None: the harness's), out.
    Returns record_task's counts per task. Picklable, for a process pool."""
    from tqdm import tqdm

    from .constants import LIBERO_RENDER_SIZE
    from .libero_goal import LiberoGoalEnv

    size = options["image_size"] or LIBERO_RENDER_SIZE
    total = len(tasks) * len(options["init_states"]) * options["attempts"]
    results = []
    with LiberoGoalEnv(image_size=size, wrist_camera=options["wrist"], render=False, seeding="per_episode",
                       seed=options["seed"]) as env, tqdm(total=total, desc=f"tasks {tasks}", unit="episode") as bar:
        for task_id in tasks:
            results.append(record_task(env, task_id, options["init_states"], options["attempts"], options["out"],
                                       noise=options["noise"], seed=options["seed"], wrist=options["wrist"],
                                       progress=bar.update))
    return results
