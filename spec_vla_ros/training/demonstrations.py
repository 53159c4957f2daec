"""Robot demonstrations in LIBERO's own HDF5 layout, read for fine-tuning, and OpenVLA's action
statistics and normalization of them.

LIBERO's demonstration files (the official `libero_goal/*_demo.hdf5`, OpenVLA's regenerated
`*_no_noops` files, and the package's scripted-expert demonstrations) hold one task each:

    data                          attrs: problem_info (JSON, with "language_instruction"),
                                         macros_image_convention ("opengl": images upside down),
                                         env_args (JSON, with "bddl_file"), bddl_file_name, ...
    data/demo_N/actions           [T, 7] float: dx dy dz droll dpitch dyaw, gripper -1 open / +1 close
    data/demo_N/obs/agentview_rgb [T, H, W, 3] uint8, as robosuite renders them (OpenGL: bottom row
                                         first), which OpenVLA's harness rotates by 180 degrees

Nothing is dropped here (no-op filtering belongs to whoever wrote the file), except frames whose
action is missing or not finite, which are counted. OpenVLA's data pipeline for LIBERO
(`libero_dataset_transform`) turns the gripper into [0, 1] with 1 = open (`1 - clip(g, 0, 1)`,
the convention of vla/gripper.py); the statistics (`get_dataset_statistics`: q01 / q99 of every
transition as float32, over the whole dataset) and the BOUNDS_Q99 normalization
(`2 (x - q01) / (q99 - q01 + 1e-8) - 1`, clipped to [-1, 1] where the mask is true, the pose dims;
dims whose min equals their max become 0) are OpenVLA's, so the action tokens of a frame are
`actions_to_token_ids(normalize_actions(...))`, and `NormStats.unnormalize` inverts them up to
the bin width.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..vla.action_tokenizer import NormStats, norm_stats_from_entry
from ..vla.constants import ACTION_DIM, LIBERO_GOAL_MASK
from .arguments import CommandError

IMAGE_KEY = "agentview_rgb"                    # the third-person camera OpenVLA is trained on
DEMO_NAME = re.compile(r"demo_(\d+)")
OPENGL_CONVENTION = "opengl"                   # LIBERO's default: images stored upside down
IMAGE_CONVENTIONS = (OPENGL_CONVENTION, "opencv")
NORMALIZATION_EPSILON = 1e-8                   # OpenVLA's BOUNDS_Q99 denominator guard


class DemonstrationError(CommandError):
    """A demonstration file that is not in LIBERO's layout; the message names the file and what was expected."""


@dataclass
class Demonstration:
    """One episode: its instruction, its usable frames and their actions in OpenVLA's convention."""

    path: Path
    key: str                      # "demo_N"
    instruction: str
    frames: np.ndarray            # [n] indices of the frames kept (an action, and a finite one)
    actions: np.ndarray           # [n, 7] float32, gripper in [0, 1] with 1 = open (OpenVLA's)
    skipped: int = 0              # frames without a usable action


def libero_to_openvla_actions(actions: np.ndarray) -> np.ndarray:
    """LIBERO actions (gripper -1 open, +1 close) -> OpenVLA's training actions (gripper 1 open, 0
    close: `1 - clip(g, 0, 1)`, libero_dataset_transform), float32 as OpenVLA's RLDS data are."""
    actions = np.asarray(actions, dtype=np.float32)
    return np.concatenate([actions[:, :ACTION_DIM - 1], 1.0 - np.clip(actions[:, ACTION_DIM - 1:], 0.0, 1.0)], axis=1)


def _attribute_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def task_language(bddl_file: str) -> str:
    """LIBERO's language of a task from its BDDL file's name (the benchmark's own rule: the name's
    words, after a LIBERO-100 scene prefix such as `KITCHEN_SCENE3_`): what LIBERO's `task.language`
    holds, OpenVLA's evaluation prompts with, and OpenVLA's training data took from the demo file's
    name (`<task name>_demo.hdf5`)."""
    name = Path(str(bddl_file)).name
    name = name[:-len(".bddl")] if name.endswith(".bddl") else name
    if name[:1].isupper():
        scene = re.search(r"SCENE\d+_", name)
        name = name[scene.end():] if scene else name
    return " ".join(name.split("_"))


def instruction_of(path: Path, attributes) -> str:
    """The task's language instruction: LIBERO's task language from the task's BDDL file named in
    `env_args` (`task_language`); without one, `problem_info`'s language_instruction. The BDDL's
    own `(:language ...)` text, which LIBERO puts in problem_info, differs for 5 of LIBERO-GOAL's 10
    tasks ("put the bowl on the top of the drawer" for "put the bowl on top of the cabinet"): a
    model trained on it would be prompted with words it never saw. DemonstrationError when neither
    is usable."""
    bddl_file = _bddl_file(attributes)
    if bddl_file:
        return task_language(bddl_file)
    if "problem_info" not in attributes:
        raise DemonstrationError(f"{path}: data has no 'problem_info' attribute; expected LIBERO's layout with "
                                 "problem_info = JSON {\"language_instruction\": ...}")
    try:
        language = json.loads(_attribute_text(attributes["problem_info"]))["language_instruction"]
    except (ValueError, KeyError, TypeError):
        raise DemonstrationError(f"{path}: data's problem_info is not JSON with a 'language_instruction'") from None
    if isinstance(language, list):                # older files keep the BDDL's words
        language = " ".join(map(str, language))
    if not isinstance(language, str) or not language.strip():
        raise DemonstrationError(f"{path}: problem_info's language_instruction is empty or not text: {language!r}")
    return language


def _bddl_file(attributes) -> str:
    """The BDDL file `env_args` names (LIBERO writes it there), or ''."""
    try:
        env_args = json.loads(_attribute_text(attributes["env_args"]))
        return str(env_args.get("bddl_file") or env_args.get("env_kwargs", {}).get("bddl_file_name") or "")
    except (KeyError, ValueError, TypeError, AttributeError):
        return ""


class DemonstrationFile:
    """An open LIBERO demonstration file: its episodes (actions read at once) and their frames (read
    when asked for, upright). Raises DemonstrationError naming the file and what was expected."""

    def __init__(self, path):
        import h5py          # here: only reading demonstrations needs it

        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise DemonstrationError(f"{self.path}: not a readable HDF5 file ({error})") from None
        data = self.file.get("data")
        if not isinstance(data, h5py.Group):
            raise DemonstrationError(f"{self.path}: no 'data' group; expected LIBERO's layout data/demo_N/...")
        self.instruction = instruction_of(self.path, data.attrs)
        convention = _attribute_text(data.attrs.get("macros_image_convention", OPENGL_CONVENTION))
        if convention not in IMAGE_CONVENTIONS:
            raise DemonstrationError(f"{self.path}: macros_image_convention '{convention}', expected one of "
                                     f"{list(IMAGE_CONVENTIONS)}")
        self.upside_down = convention == OPENGL_CONVENTION
        keys = sorted((k for k in data if DEMO_NAME.fullmatch(k)), key=lambda k: int(k.split("_")[1]))
        if not keys:
            raise DemonstrationError(f"{self.path}: data holds no demo_N groups")
        self.demonstrations = [self._read(data[key], key) for key in keys]

    def _read(self, group, key: str) -> Demonstration:
        where = f"{self.path}: data/{key}"
        if "actions" not in group or f"obs/{IMAGE_KEY}" not in group:
            raise DemonstrationError(f"{where} lacks 'actions' or 'obs/{IMAGE_KEY}'")
        actions, images = group["actions"], group[f"obs/{IMAGE_KEY}"]
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise DemonstrationError(f"{where}/actions has shape {actions.shape}, expected [T, {ACTION_DIM}]")
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise DemonstrationError(f"{where}/obs/{IMAGE_KEY} is {images.dtype} {images.shape}, "
                                     "expected uint8 [T, H, W, 3]")
        values = np.asarray(actions[:], dtype=np.float64)[:images.shape[0]]
        usable = np.flatnonzero(np.isfinite(values).all(axis=1))
        return Demonstration(self.path, key, self.instruction, usable,
                             libero_to_openvla_actions(values[usable]), skipped=images.shape[0] - usable.size)

    def frame(self, key: str, index: int) -> np.ndarray:
        """The HxWx3 uint8 agentview image of frame `index` of `key`, upright (rotated by 180 degrees
        when stored OpenGL-style, as OpenVLA's harness does)."""
        image = self.file["data"][key]["obs"][IMAGE_KEY][int(index)]
        return np.ascontiguousarray(image[::-1, ::-1]) if self.upside_down else image

    def close(self) -> None:
        self.file.close()


def demonstration_files(paths) -> list[Path]:
    """The files named, with directories expanded to their `*.hdf5` files (sorted); CommandError for
    a path that does not exist or a directory without any."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.hdf5"))
            if not found:
                raise DemonstrationError(f"{path}: no *.hdf5 demonstration files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DemonstrationError(f"{path}: no such demonstration file or directory")
    if len(set(files)) != len(files):
        raise DemonstrationError("a demonstration file is named twice: " + ", ".join(
            sorted({str(f) for f in files if files.count(f) > 1})))
    return files


@dataclass
class ActionStatistics:
    """OpenVLA's `dataset_statistics.json` entry of a dataset (`get_dataset_statistics`)."""

    q01: np.ndarray
    q99: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    mask: tuple = LIBERO_GOAL_MASK            # de-normalize the pose dims; the gripper passes through
    num_transitions: int = 0
    num_trajectories: int = 0
    unused: np.ndarray = field(init=False)    # dims with min == max: normalized to 0

    def __post_init__(self):
        self.unused = self.minimum == self.maximum

    @classmethod
    def of(cls, actions: np.ndarray, num_trajectories: int) -> "ActionStatistics":
        """From every transition's action (OpenVLA's convention, float32 as its RLDS data)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or not len(actions):
            raise CommandError(f"action statistics need [N >= 1, {ACTION_DIM}] actions, got {actions.shape}")
        return cls(np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0), actions.min(0),
                   actions.max(0), actions.mean(0), actions.std(0), num_transitions=len(actions),
                   num_trajectories=num_trajectories)

    def to_json_entry(self) -> dict:
        """`{unnorm_key: this}` is OpenVLA's dataset_statistics.json (no proprio: LIBERO's images only)."""
        as_list = lambda values: [float(v) for v in values]         # noqa: E731
        return {"action": {"mean": as_list(self.mean), "std": as_list(self.std), "max": as_list(self.maximum),
                           "min": as_list(self.minimum), "q01": as_list(self.q01), "q99": as_list(self.q99),
                           "mask": list(self.mask)},
                "num_transitions": self.num_transitions, "num_trajectories": self.num_trajectories}

    def norm_stats(self, unnorm_key: str) -> NormStats:
        """What the package's loader reads back from the entry (and de-normalizes with)."""
        return norm_stats_from_entry(self.to_json_entry(), unnorm_key)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """OpenVLA's BOUNDS_Q99 normalization in float32: `clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1,
        -1, 1)` where the mask is true, the value itself elsewhere; unused dims become 0."""
        x = np.asarray(actions, dtype=np.float32)
        low, high = self.q01.astype(np.float32), self.q99.astype(np.float32)
        scaled = np.clip(2 * (x - low) / (high - low + np.float32(NORMALIZATION_EPSILON)) - 1, -1, 1)
        normalized = np.where(np.asarray(self.mask), scaled, x)
        return np.where(self.unused, np.float32(0), normalized).astype(np.float32)
