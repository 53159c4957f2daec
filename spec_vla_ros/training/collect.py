"""`spec-vla-collect`: run the verifier greedily on observations and save what a draft learns from.

Per kept control step, only what a draft head reads: the 7 action tokens and, over the last
W = min(P, context + 1) positions of the prompt of length P (`--context`, as in
`spec-vla-train-draft`; 0 keeps the whole prompt), the input embeddings [W, H] and the
last-layer hidden states [W + 6, H] (the window, then the first six action tokens fed back).
The head reads hidden states from the window's first position and input embeddings from its
second; the one unread embedding row keeps each trace a self-contained prompt window that the
harness replays as it is. Steps are written as sharded safetensors plus `manifest.json`.

Storage dtype (`--storage-dtype auto`): a 16-bit verifier's features are stored as they are
(bf16 for OpenVLA-7B on CUDA: exact); an fp32 verifier's (the miniature on the CPU) as fp16,
whose 11 significant bits round 8x finer than bf16's 8 while post-norm hidden states and input
embeddings stay far inside its range (a non-finite value after the cast is refused). On the
miniature, fp16 storage changed none of 420 greedy tokens read back through the lm_head, bf16
changed 21 (5 %): its tokens hinge on small hidden-state differences.

Bytes per control step: 2 bytes x H x (2 W + 6) + 56 (tokens) + ~220 (safetensors header); at
the default context 16 (W = 17), 80 H bytes: 20.8 KB for the miniature (H = 256, measured) and
328 KB for OpenVLA-7B (H = 4096), where keeping every prompt position (P = BOS + 256 patches +
~25 prompt tokens) took (2 P + 6) H x 2 bytes = 4.6 MB in bf16. Older trace directories (every
prompt position, no `format_version`) stay readable.

No-op actions are dropped as OpenVLA's `no_noops` LIBERO data does: pose delta norm below 1e-4
with the gripper unchanged from the last kept action.

Sources: `synthetic` (seeded scenes of slowly moving objects: the miniature's default data),
`images` (a directory of frames, each sub-directory one episode), `bag` (a recorded rosbag2
bag: the camera frames the policy acted on, with their instructions, split into episodes at
each episode result; the verifier decodes them here), `libero` (LIBERO-GOAL rollouts of the
verifier itself, via sim_bridge.libero_goal).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sim_bridge.constants import LIBERO_GOAL_INSTRUCTIONS

from ..drafts.eagle_head import DEFAULT_CONTEXT
from ..vla.action_tokenizer import select_norm_stats, token_ids_to_actions
from ..vla.checkpoint import LoadedVerifier
from ..vla.constants import ACTION_DIM, DEFAULT_UNNORM_KEY
from ..vla.miniature import MINIATURE
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.session import VerifierSession
from .arguments import CommandError, absolute_path, check_new_directory

MANIFEST = "manifest.json"
NOOP_POSE_NORM = 1e-4               # OpenVLA's no_noops data: |pose delta| below this with an unchanged gripper
TRACE_FORMAT = "spec_vla_ros.traces"
TRACE_FORMAT_VERSION = 2          # 2: prompt windows; 1 (no format_version): every prompt position
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
STORAGE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class TraceError(CommandError):
    """A trace directory that cannot be read as it is; the message says why and what to do."""


@dataclass
class Trace:
    tokens: list[int]                 # the 7 greedy action tokens
    hidden: torch.Tensor              # [P + 6, H] last-layer hidden states
    input_embeds: torch.Tensor        # [P, H]

    @property
    def prompt_length(self) -> int:
        return self.input_embeds.shape[0]


def trace_action(model, pixels: torch.Tensor, prompt_ids: list[int]) -> Trace:
    """Greedy decoding (the same passes as the autoregressive Decoder), keeping the features."""
    session = VerifierSession(model)
    step = session.prefill(pixels, prompt_ids)
    tokens, hidden, input_embeds = step.greedy()[-1:], [step.hidden], step.input_embeds
    while len(tokens) < ACTION_DIM:
        step = session.extend(tokens[-1:])
        tokens.append(step.greedy()[-1])
        hidden.append(step.hidden)
    return Trace(tokens, torch.cat(hidden), input_embeds)


def prompt_window(trace: Trace, context: int | None) -> Trace:
    """The trace cut to the last min(P, context + 1) prompt positions (None: the whole prompt)."""
    if context is None:
        return trace
    start = max(0, trace.prompt_length - 1 - context)
    return Trace(trace.tokens, trace.hidden[start:], trace.input_embeds[start:])


def verifier_location(verifier: str) -> str:
    """What a manifest records to find the verifier again: `miniature` or an absolute path."""
    return verifier if verifier == MINIATURE else str(absolute_path(verifier))


def is_noop(action: np.ndarray, previous: np.ndarray | None) -> bool:
    """OpenVLA's LIBERO no-op rule (regenerate_libero_dataset.py), on de-normalized actions."""
    still = np.linalg.norm(action[:-1]) < NOOP_POSE_NORM
    return bool(still) if previous is None else bool(still and action[-1] == previous[-1])


def synthetic_episode(seed: int, steps: int, size: int = 256) -> tuple[str, list[np.ndarray]]:
    """A seeded scene (smooth colour background, three discs drifting a few pixels per step) and a
    LIBERO-GOAL instruction: consecutive frames change slowly, like a robot camera's."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.integers(0, 256, (1, 3, 8, 8)).astype(np.float32))
    background = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    background = background[0].permute(1, 2, 0).numpy()
    centers = rng.uniform(0.2 * size, 0.8 * size, (3, 2))
    velocities = rng.normal(0.0, 0.01 * size, (3, 2))
    colours = rng.integers(0, 256, (3, 3))
    radii = rng.uniform(0.06 * size, 0.15 * size, 3)
    rows, cols = np.mgrid[0:size, 0:size]
    frames = []
    for _ in range(steps):
        frame = background.copy()
        for center, colour, radius in zip(centers, colours, radii):
            frame[(rows - center[0]) ** 2 + (cols - center[1]) ** 2 < radius ** 2] = colour
        frames.append(frame.round().clip(0, 255).astype(np.uint8))
        velocities += rng.normal(0.0, 0.002 * size, velocities.shape)
        centers = np.clip(centers + velocities, 0.1 * size, 0.9 * size)
    return LIBERO_GOAL_INSTRUCTIONS[int(rng.integers(len(LIBERO_GOAL_INSTRUCTIONS)))], frames


def image_episodes(directory: Path, instruction: str | None):
    """Episodes of (instruction, frames) from a directory: its sub-directories in name order, or
    the directory itself. Instructions come from `instructions.json` ({episode dir name or
    image file name: instruction}) or `instruction`."""
    directory = Path(directory)
    table_file = directory / "instructions.json"
    table = json.loads(table_file.read_text()) if table_file.exists() else {}
    folders = sorted(p for p in directory.iterdir() if p.is_dir()) or [directory]
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        text = table.get(folder.name) or table.get(files[0].name) or instruction
        if not text:
            raise CommandError(f"no instruction for {folder}: add it to {table_file} or pass --instruction")
        yield text, [np.asarray(Image.open(f).convert("RGB")) for f in files]


class TraceWriter:
    """Buffers traces and writes `shard-NNNNN.safetensors` files and the manifest."""

    def __init__(self, directory, verifier: LoadedVerifier, source: dict, shard_steps: int = 64,
                 storage_dtype: str = "auto", context: int | None = DEFAULT_CONTEXT,
                 verifier_path: str | None = None):
        """`context`: prompt positions a head may read (the window keeps context + 1; None: all).
        `verifier_path`: `miniature` or the checkpoint directory, recorded so that
        spec-vla-train-draft finds the verifier without being told."""
        self.directory = Path(directory)
        check_new_directory(self.directory, "output directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = storage_dtype_for(verifier.dtype) if storage_dtype == "auto" else STORAGE_DTYPES[storage_dtype]
        self.context = context
        self.manifest = {"format": TRACE_FORMAT, "format_version": TRACE_FORMAT_VERSION, "verifier": verifier.name,
                         "verifier_path": verifier_path, "hidden_size": verifier.model.hidden_size,
                         "prompt_window": context, "storage_dtype": str(self.dtype).removeprefix("torch."),
                         "source": source, "dropped_noops": 0, "shards": [], "steps": []}
        self.shard_steps = shard_steps
        self.buffer: dict[str, torch.Tensor] = {}

    def add(self, trace: Trace, episode: int, step: int, instruction: str) -> None:
        index = len(self.manifest["steps"])
        window = prompt_window(trace, self.context)
        for key, value in (("hidden", window.hidden), ("input_embeds", window.input_embeds)):
            stored = value.to(self.dtype).cpu().contiguous()
            if not bool(stored.isfinite().all()):
                raise CommandError(f"step {index}: {key} does not fit {self.dtype} (non-finite after the cast); "
                                 "collect with --storage-dtype float32 or bfloat16")
            self.buffer[f"{index}.{key}"] = stored
        self.buffer[f"{index}.tokens"] = torch.tensor(trace.tokens, dtype=torch.int64)
        self.manifest["steps"].append({"episode": episode, "step": step, "instruction": instruction,
                                       "prompt_length": trace.prompt_length, "window": window.prompt_length,
                                       "shard": len(self.manifest["shards"])})
        if len(self.buffer) >= 3 * self.shard_steps:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            name = f"shard-{len(self.manifest['shards']):05d}.safetensors"
            save_file(self.buffer, self.directory / name, metadata={"format": "pt"})
            self.manifest["shards"].append(name)
            self.buffer = {}

    def close(self) -> Path:
        self.flush()
        self.manifest["num_steps"] = len(self.manifest["steps"])
        (self.directory / MANIFEST).write_text(json.dumps(self.manifest, indent=1) + "\n")
        return self.directory


def storage_dtype_for(verifier_dtype: torch.dtype) -> torch.dtype:
    """`--storage-dtype auto`: a 16-bit verifier's own dtype, else fp16 (see the module doc)."""
    return verifier_dtype if verifier_dtype in (torch.bfloat16, torch.float16) else torch.float16


def read_manifest(directory) -> dict:
    """The trace directory's manifest, checked; a version-1 manifest gets its implied window
    fields (every prompt position kept). Raises TraceError."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise TraceError(f"{directory}: no {MANIFEST} (not a trace directory; collect traces with spec-vla-collect)")
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise TraceError(f"{directory / MANIFEST}: not valid JSON ({error}); recollect with spec-vla-collect") from None
    if not isinstance(manifest, dict) or manifest.get("format") != TRACE_FORMAT:
        raise TraceError(f"{directory / MANIFEST} is not a trace manifest (format '{TRACE_FORMAT}')")
    version = manifest.setdefault("format_version", 1)
    if version not in (1, TRACE_FORMAT_VERSION):
        raise TraceError(f"{directory / MANIFEST}: trace format_version {version!r} is not supported "
                         f"(expected 1 or {TRACE_FORMAT_VERSION}); recollect with this spec-vla-collect")
    if version == 1:
        manifest["prompt_window"] = None
        for entry in manifest["steps"]:
            entry["window"] = entry["prompt_length"]
    return manifest


def recorded_verifier_location(manifest: dict) -> str | None:
    """Where the verifier that collected the traces is: the manifest's `verifier_path`; for older
    manifests the --verifier they were collected with when it is `miniature` or an absolute path,
    or `miniature` when the recorded name is the miniature's. None when the manifest does not say."""
    location = manifest.get("verifier_path") or manifest.get("source", {}).get("verifier")
    if location and (location == MINIATURE or Path(location).is_absolute()):
        return location
    return MINIATURE if manifest.get("verifier", "").startswith(f"{MINIATURE}-seed") else None


def read_traces(directory) -> tuple[dict, list[dict]]:
    """(manifest, steps): each step has its manifest entry (`prompt_length` P, `window` W, ...)
    plus `tokens` [7], `hidden` [W + 6, H] and `input_embeds` [W, H] for the last W prompt
    positions, in the storage dtype. Raises TraceError."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    steps = [dict(entry) for entry in manifest["steps"]]
    for shard_index, name in enumerate(manifest["shards"]):
        try:
            with safe_open(directory / name, framework="pt") as shard:
                for index, entry in enumerate(steps):
                    if entry["shard"] == shard_index:
                        for key in ("hidden", "input_embeds", "tokens"):
                            entry[key] = shard.get_tensor(f"{index}.{key}")
        except (SafetensorError, OSError) as error:
            raise TraceError(f"{directory / name}: not a readable trace shard ({error}); recollect") from None
    return manifest, steps


class Collector:
    """Decodes observations one episode at a time and writes the kept steps."""

    def __init__(self, verifier: LoadedVerifier, writer: TraceWriter, center_crop: bool = True):
        self.verifier, self.writer, self.center_crop = verifier, writer, center_crop
        self.norm_stats = select_norm_stats(verifier.norm_stats, DEFAULT_UNNORM_KEY)
        self.episode, self.step, self.previous = -1, 0, None

    def new_episode(self) -> None:
        self.episode, self.step, self.previous = self.episode + 1, 0, None

    def __call__(self, image: np.ndarray, instruction: str) -> np.ndarray:
        """Policy function: record the step (unless a no-op) and return the de-normalized action."""
        pixels = pixel_values(image, self.center_crop, normalization=self.verifier.image_normalization)
        trace = trace_action(self.verifier.model, pixels, prompt_token_ids(self.verifier.tokenizer, instruction))
        action = self.norm_stats.unnormalize(token_ids_to_actions(trace.tokens))
        if is_noop(action, self.previous):
            self.writer.manifest["dropped_noops"] += 1
        else:
            self.writer.add(trace, self.episode, self.step, instruction)
            self.previous = action
        self.step += 1
        return action


def collect_episodes(collector: Collector, episodes) -> None:
    for instruction, frames in episodes:
        collector.new_episode()
        for frame in frames:
            collector(frame, instruction)


def collect_libero(collector: Collector, task_ids, episodes_per_task: int, max_steps: int, seed: int) -> None:
    from sim_bridge.libero_goal import LiberoGoalEnv, run_episodes  # heavy (MuJoCo, robosuite): only here

    with LiberoGoalEnv(max_steps=max_steps, seed=seed) as env:
        run_episodes(env, collector, task_ids=task_ids, episodes_per_task=episodes_per_task,
                     reset_policy=collector.new_episode)
