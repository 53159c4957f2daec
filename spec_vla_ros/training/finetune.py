"""`spec-vla-finetune`: fine-tune an OpenVLA-architecture verifier on demonstrations in LIBERO's HDF5
layout, as OpenVLA's fine-tuning does, into an OpenVLA HF directory the package loads like a real
checkpoint (`verifier:=DIR`, `--verifier DIR`).

Each frame of a demonstration is one sample: its agentview image through the harness's image path
(rotated upright, JPEG round trip, lanczos3 to 224 px, the centered 0.9-area crop unless
--no-center-crop: what evaluation feeds the model), OpenVLA's prompt for the file's instruction,
and its action as 7 tokens: normalized by the dataset's own q01 / q99 (the pose dims; the gripper,
1 = open, passes through) into OpenVLA's 256 bins (training/demonstrations.py,
vla/action_tokenizer.py). The loss is next-token cross-entropy over the whole vocabulary on the 7
action tokens, teacher-forced in one pass over [BOS, patch embeddings, prompt, a0..a5], exactly the
sequence the verifier's prefill and extend passes see at evaluation. AdamW with a constant learning
rate after an optional warmup (OpenVLA's fine-tuning: constant 5e-4, batch 16), or cosine decay;
gradients clipped to --max-grad-norm.

--init names the starting point: `miniature` (the embedded seeded miniature), `compact` (the same
architecture at laptop-training size, vla/compact.py, seeded random weights) or an OpenVLA
directory. --train names the parts that learn; the rest are frozen. Without `vision` the vision
towers' features of every frame used are computed once and cached in memory (the towers never
change), which makes a step cheaper; `action-rows` trains only the 256 action rows of the lm_head.

--out holds the result: config.json, model.safetensors, dataset_statistics.json (the dataset's
statistics under --unnorm-key, in OpenVLA's layout), preprocessor_config.json and tokenizer files,
rewritten at every checkpoint (every --checkpoint-every steps, and at the end), beside
finetune_state.pt (weights, optimizer, step: what a resume needs) and finetune.json (the run's
settings, dataset, and learning curve). Running the same command again on an --out that holds a
finetune_state.pt resumes from it (a larger --steps trains further; other settings must be the
same); batches depend only on the step, so an interrupted and resumed run ends with the weights of
an uninterrupted one. Whole episodes are held out for validation (the last --val-fraction of each
file's); every --eval-every steps the training loss and, on up to --val-samples held-out frames,
the loss, per action dimension the exact-token and within-3-bins accuracy, and the most frequent
training token's exact accuracy (a floor) are printed and recorded.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..vla.action_tokenizer import actions_to_token_ids
from ..vla.checkpoint import LoadedVerifier, load_checkpoint, write_checkpoint
from ..vla.compact import COMPACT, build_compact
from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, PAD_TOKEN_ID
from ..vla.miniature import MINIATURE, build_miniature
from ..vla.model import OpenVLA
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from .arguments import CommandError, apply_runtime_arguments
from .demonstrations import ActionStatistics, DemonstrationFile, demonstration_files

TRAIN_STATE = "finetune_state.pt"
RECORD = "finetune.json"
INITS = (MINIATURE, COMPACT)                 # or an OpenVLA directory
# Parts of the model `--train` names -> parameter name prefixes.
PARTS = {
    "vision": ("vision_backbone.",),
    "projector": ("projector.",),
    "language-model": ("language_model.model.layers.", "language_model.model.norm."),
    "embeddings": ("language_model.model.embed_tokens.",),
    "lm-head": ("language_model.lm_head.",),
    "action-rows": ("language_model.lm_head.",),     # only rows 31744..31999 learn
}
TRAINABLE_PARTS = ("vision", "projector", "language-model", "embeddings", "lm-head", "action-rows")
ALL_PARTS = "vision,projector,language-model,embeddings,lm-head"
LR_SCHEDULES = ("constant", "cosine")
WITHIN_BINS = 3                              # "close" accuracy: |predicted bin - true bin| <= 3
FEATURE_CHUNK = 16                           # frames per vision pass when caching features
EXPORT_SHARD_SIZE = "2GB"
# Settings a resumed run must share with the run it continues (--steps may grow; only the cosine
# schedule depends on it).
RUN_SETTINGS = ("demos", "init", "seed", "train", "unnorm_key", "center_crop", "batch_size", "lr", "weight_decay",
                "warmup", "lr_schedule", "max_grad_norm", "val_fraction", "val_samples", "dtype")


# --- data -------------------------------------------------------------------------------------

@dataclass
class Frames:
    """Every usable frame of the demonstrations, as arrays indexed by frame number."""

    files: list                   # DemonstrationFile, open
    where: list                   # per frame: (file index, demo key, frame index in the demo)
    instructions: list            # per frame
    actions: np.ndarray           # [N, 7] OpenVLA's convention (float32)
    tokens: np.ndarray            # [N, 7] action token ids
    train: np.ndarray             # frame numbers used for training
    val: np.ndarray               # held-out frame numbers evaluated (at most --val-samples)
    val_episodes: int
    statistics: ActionStatistics
    skipped: int                  # frames without a usable action

    @classmethod
    def read(cls, paths, val_fraction: float, val_samples: int) -> "Frames":
        files = [DemonstrationFile(path) for path in demonstration_files(paths)]
        where, instructions, actions, held_out, val_episodes, episodes, skipped = [], [], [], [], 0, 0, 0
        for file_index, file in enumerate(files):
            demos = [demo for demo in file.demonstrations if len(demo.frames)]
            skipped += sum(demo.skipped for demo in file.demonstrations)
            num_val = min(max(1, round(val_fraction * len(demos))), len(demos) - 1) if val_fraction > 0 else 0
            for index, demo in enumerate(demos):
                is_val = index >= len(demos) - num_val
                val_episodes += is_val
                held_out += [is_val] * len(demo.frames)
                where += [(file_index, demo.key, int(t)) for t in demo.frames]
                instructions += [demo.instruction] * len(demo.frames)
                actions.append(demo.actions)
            episodes += len(demos)
        if not where:
            raise CommandError(f"no usable frames in {[str(f.path) for f in files]} "
                               f"({skipped} without a finite action)")
        if all(held_out):
            raise CommandError("every episode is held out for validation; lower --val-fraction or add demonstrations")
        actions = np.concatenate(actions)
        statistics = ActionStatistics.of(actions, episodes)
        tokens = actions_to_token_ids(statistics.normalize(actions)).astype(np.int64)
        held_out = np.asarray(held_out)
        val = np.flatnonzero(held_out)
        if len(val) > val_samples:          # evenly spaced over the held-out episodes, fixed for the run
            val = val[np.unique(np.linspace(0, len(val) - 1, val_samples).round().astype(np.int64))]
        return cls(files, where, instructions, actions, tokens, np.flatnonzero(~held_out), val, val_episodes,
                   statistics, skipped)

    def image(self, frame: int) -> np.ndarray:
        file_index, key, index = self.where[frame]
        return self.files[file_index].frame(key, index)

    def summary(self) -> dict:
        return {"files": [str(f.path) for f in self.files], "frames": len(self.where),
                "train_frames": len(self.train), "val_frames_evaluated": len(self.val),
                "val_episodes": self.val_episodes, "episodes": self.statistics.num_trajectories,
                "skipped_frames": self.skipped, "instructions": sorted(set(self.instructions))}


def batch_frames(train: np.ndarray, step: int, batch_size: int, seed: int) -> np.ndarray:
    """The training frames of `step`: consecutive slices of per-epoch permutations (seeded by seed and
    epoch), so a batch depends only on the step (resumable)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // len(train)
    picked = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = np.random.default_rng([seed, int(epoch)]).permutation(len(train))
        chosen = epochs == epoch
        picked[chosen] = train[order[positions[chosen] % len(train)]]
    return picked


# --- the model's side -------------------------------------------------------------------------

def action_logits(model: OpenVLA, features: torch.Tensor, prompts: list[list[int]],
                  actions: torch.Tensor) -> torch.Tensor:
    """Teacher-forced logits [B, 7, vocab] of the 7 action tokens: one pass over [BOS, projected
    patches, prompt tokens, a0..a5] per sample (right-padded: causal attention never reads the
    padding), the logits of the positions that predict a0..a6 (the prompt's last, then a0..a5).
    `features` are the vision towers' outputs [B, patches, fused dim]."""
    patches = model.projector(features)
    batch, num_patches = patches.shape[:2]
    lengths = [len(prompt) + ACTION_DIM - 1 for prompt in prompts]
    ids = torch.full((batch, max(lengths)), PAD_TOKEN_ID, dtype=torch.long, device=patches.device)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.tensor(prompt, device=patches.device)
        ids[row, len(prompt):lengths[row]] = actions[row, :ACTION_DIM - 1]
    tokens = model.embed_tokens(ids)
    embeds = torch.cat([tokens[:, :1], patches.to(tokens.dtype), tokens[:, 1:]], dim=1)
    hidden = model.language_model.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
    first = torch.tensor([num_patches + len(prompt) - 1 for prompt in prompts], device=patches.device)
    positions = first[:, None] + torch.arange(ACTION_DIM, device=patches.device)
    return model.language_model.lm_head(hidden[torch.arange(batch, device=patches.device)[:, None], positions])


def token_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and dimension: the greedy token is the label; it is an action token within
    WITHIN_BINS bins of the label (|id difference| = |bin difference|)."""
    predicted = logits.argmax(-1)
    is_action = (predicted >= ACTION_TOKEN_MIN) & (predicted <= ACTION_TOKEN_MAX)
    return predicted == labels, is_action & ((predicted - labels).abs() <= WITHIN_BINS)


def parse_parts(text: str) -> tuple[str, ...]:
    """`--train` as a tuple of part names (`all` = every part, the whole lm_head); CommandError naming
    an unknown part."""
    names = tuple(dict.fromkeys(name.strip() for name in (ALL_PARTS if text == "all" else text).split(",")))
    unknown = [name for name in names if name not in PARTS]
    if unknown or not names:
        raise CommandError(f"--train {text}: unknown part(s) {unknown}; expected 'all' or a comma-separated "
                           f"list of {', '.join(TRAINABLE_PARTS)}")
    if "lm-head" in names and "action-rows" in names:
        raise CommandError(f"--train {text}: lm-head already trains the action rows; name one of the two")
    return names


def set_trainable(model: OpenVLA, parts: tuple[str, ...]) -> list[dict]:
    """Freeze every parameter outside `parts`; the optimizer's parameter groups. With `action-rows`
    the lm_head's other rows get no gradient and no weight decay, so they stay as they are."""
    prefixes = tuple(prefix for part in parts for prefix in PARTS[part])
    trained, head = [], []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
        if parameter.requires_grad:
            (head if "action-rows" in parts and name.startswith(PARTS["action-rows"]) else trained).append(parameter)
    for parameter in head:
        rows = torch.zeros(parameter.shape[0], 1, device=parameter.device)
        rows[ACTION_TOKEN_MIN:ACTION_TOKEN_MAX + 1] = 1
        parameter.register_hook(lambda grad, rows=rows: grad * rows)
    return [group for group in ({"params": trained}, {"params": head, "weight_decay": 0.0}) if group["params"]]


class Inputs:
    """What the model reads of frames: pixel values (vision trained), or the vision towers' features
    computed once for every frame used (vision frozen)."""

    def __init__(self, frames: Frames, verifier: LoadedVerifier, center_crop: bool, device: torch.device,
                 cache_features: bool, autocast):
        self.frames, self.verifier, self.center_crop, self.device = frames, verifier, center_crop, device
        self.autocast = autocast
        self.prompts = {text: prompt_token_ids(verifier.tokenizer, text) for text in set(frames.instructions)}
        self.cache = None
        if cache_features:
            used = np.concatenate([frames.train, frames.val])
            self.row = {int(frame): row for row, frame in enumerate(used)}
            chunks = []
            with torch.no_grad():
                for start in tqdm(range(0, len(used), FEATURE_CHUNK), desc="vision features", unit="chunk"):
                    chunks.append(self._vision(used[start:start + FEATURE_CHUNK]).float().cpu())
            self.cache = torch.cat(chunks)
            tqdm.write(f"cached the frozen vision towers' features of {len(used)} frames "
                       f"({self.cache.numel() * 4 / 2**20:.0f} MiB)")

    def pixels(self, frames) -> torch.Tensor:
        return torch.stack([pixel_values(self.frames.image(int(frame)), self.center_crop,
                                         self.verifier.image_normalization) for frame in frames]).to(self.device)

    def _vision(self, frames) -> torch.Tensor:
        with self.autocast():
            return self.verifier.model.vision_backbone(self.pixels(frames))

    def features(self, frames) -> torch.Tensor:
        if self.cache is None:
            return self._vision(frames)
        return self.cache[[self.row[int(frame)] for frame in frames]].to(self.device)

    def batch(self, frames) -> tuple[torch.Tensor, list, torch.Tensor]:
        return (self.features(frames), [self.prompts[self.frames.instructions[int(f)]] for f in frames],
                torch.from_numpy(self.frames.tokens[frames]).to(self.device))


@torch.no_grad()
def evaluate(model: OpenVLA, inputs: Inputs, frames: np.ndarray, batch_size: int) -> dict:
    """Loss and per-dimension exact / within-3-bins accuracy on `frames`, overall and per task
    (`val_by_task`, by instruction: a pooled figure hides a task that does not learn), and the
    exact accuracy of always answering the most frequent training token of each dimension."""
    model.eval()
    losses, exact, within = [], [], []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        features, prompts, labels = inputs.batch(chunk)
        with inputs.autocast():
            logits = action_logits(model, features, prompts, labels).float()
        losses.append(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(-1, ACTION_DIM)
                      .sum(1).cpu())
        hits = token_hits(logits, labels)
        exact.append(hits[0].cpu())
        within.append(hits[1].cpu())
    model.train()
    losses, exact, within = torch.cat(losses), torch.cat(exact).float(), torch.cat(within).float()

    def scores(rows) -> dict:
        return {"val_loss": round(losses[rows].sum().item() / (len(losses[rows]) * ACTION_DIM), 4),
                "val_exact": [round(v, 4) for v in exact[rows].mean(0).tolist()],
                "val_within3": [round(v, 4) for v in within[rows].mean(0).tolist()]}
    tokens = inputs.frames.tokens
    modes = torch.from_numpy(tokens[inputs.frames.train]).mode(dim=0).values.numpy()
    instructions = np.array([inputs.frames.instructions[frame] for frame in frames])
    by_task = {task: {"frames": int((instructions == task).sum()), **scores(torch.from_numpy(instructions == task))}
               for task in sorted(set(instructions))}
    most_frequent = [round(float(v), 4) for v in (tokens[frames] == modes).mean(0)]
    return {**scores(slice(None)), "val_most_frequent_exact": most_frequent, "val_by_task": by_task}


def learning_rate(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.lr_schedule == "constant":
        return args.lr
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))


def describe(metrics: dict) -> str:
    parts = []
    for name, value in metrics.items():
        if name == "val_by_task":
            parts.append("val_loss by task " + ", ".join(f"'{task}' {scores['val_loss']}"
                                                         for task, scores in value.items()))
        elif isinstance(value, list):
            parts.append(f"{name} [{' '.join(f'{v:.2f}' for v in value)}]")
        elif name != "step":
            parts.append(f"{name} {value}")
    return "  ".join(parts)


# --- runs ---------------------------------------------------------------------------------------

def run_settings(args) -> dict:
    settings = {name: getattr(args, name) for name in RUN_SETTINGS}
    settings["demos"] = [str(path) for path in demonstration_files(args.demos)]
    settings["train"] = ",".join(parse_parts(args.train))
    if args.lr_schedule == "cosine":
        settings["steps"] = args.steps
    return settings


def check_arguments(args) -> dict:
    """Everything checked before a weight or a frame is read; the run's settings."""
    for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "val_samples"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least 1")
    if not 0 <= args.val_fraction < 1:
        raise CommandError(f"--val-fraction {args.val_fraction}: expected a fraction in [0, 1)")
    if args.lr <= 0 or args.warmup < 0 or args.weight_decay < 0 or args.max_grad_norm < 0:
        raise CommandError("--lr must be positive; --warmup, --weight-decay and --max-grad-norm at least 0")
    if args.lr_schedule not in LR_SCHEDULES:
        raise CommandError(f"--lr-schedule {args.lr_schedule}: expected one of {list(LR_SCHEDULES)}")
    if args.init not in INITS and not (Path(args.init) / "config.json").is_file():
        raise CommandError(f"--init {args.init}: expected {' or '.join(INITS)}, or an OpenVLA directory with a "
                           "config.json")
    settings = run_settings(args)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) \
            and not (args.out / TRAIN_STATE).is_file():
        raise CommandError(f"--out {args.out} exists and holds no {TRAIN_STATE} to resume from; choose a new directory")
    return settings


def initial_verifier(init: str, seed: int) -> LoadedVerifier:
    if init == MINIATURE:
        return build_miniature(seed)
    if init == COMPACT:
        return build_compact(seed)
    return load_checkpoint(init, "cpu", "float32")


def replace_atomically(source: Path, target: Path) -> None:
    """Move every file of `source` into `target` (each file replaced atomically), then remove `source`."""
    for path in sorted(source.iterdir()):
        os.replace(path, target / path.name)
    source.rmdir()


def finetune(args, stop_at_step: int | None = None) -> dict:
    """Fine-tune (or resume) as the module describes; returns the run's record. `stop_at_step`
    checkpoints and returns once that step is done, as an interruption would (tests)."""
    settings = check_arguments(args)
    apply_runtime_arguments(args)
    state_file = args.out / TRAIN_STATE
    resuming = state_file.is_file()
    if resuming:
        saved = torch.load(state_file, weights_only=False, map_location="cpu")
        differing = {name: (saved["settings"].get(name), value) for name, value in settings.items()
                     if saved["settings"].get(name) != value}
        if differing:
            raise CommandError(f"--out {args.out} holds a run with other settings (this run vs. the saved one: " +
                               ", ".join(f"{name} {new!r} vs. {old!r}" for name, (old, new) in differing.items()) +
                               "); rerun with the saved settings or choose a new --out")
        verifier = load_checkpoint(args.out, "cpu", "float32")
        verifier.model.load_state_dict(saved["model"])
        record = saved["record"]
    else:
        verifier = initial_verifier(args.init, args.seed)
        record = {"settings": settings, "step": 0, "seconds": 0.0, "history": []}
    device = torch.device(args.device)
    model = verifier.model.to(device=device, dtype=torch.float32).train()
    autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.dtype)

    def autocast():
        return torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    frames = Frames.read(args.demos, args.val_fraction, args.val_samples)
    verifier.norm_stats = {args.unnorm_key: frames.statistics.to_json_entry()}
    record["dataset"] = frames.summary()
    parts = parse_parts(args.train)
    optimizer = torch.optim.AdamW(set_trainable(model, parts), lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    if resuming:
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        del saved
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"fine-tuning {args.init} into {args.out} ({trained / 1e6:.2f} M of "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters trained: {', '.join(parts)}) on "
          f"{len(frames.train)} frames of {frames.statistics.num_trajectories - frames.val_episodes} episode(s) "
          f"({frames.val_episodes} held out, {len(frames.val)} of their frames evaluated; {frames.skipped} frames "
          f"skipped without a finite action) on {args.device}"
          + (f", resuming at step {record['step']}" if resuming else ""))
    inputs = Inputs(frames, verifier, args.center_crop, device, "vision" not in parts, autocast)

    def checkpoint() -> None:
        """The HF directory first (files replaced one by one), then the state that names its step."""
        staging = args.out / ".export"
        shutil.rmtree(staging, ignore_errors=True)
        write_checkpoint(verifier, staging, EXPORT_SHARD_SIZE, as_openvla=True)
        args.out.mkdir(parents=True, exist_ok=True)
        replace_atomically(staging, args.out)
        (args.out / RECORD).write_text(json.dumps(record, indent=1))
        partial = args.out / (TRAIN_STATE + ".partial")
        torch.save({"settings": settings, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "record": record}, partial)
        os.replace(partial, state_file)

    if not resuming:
        checkpoint()                          # --out is a loadable directory from the start
    start = time.perf_counter() - record["seconds"]
    run_start = time.perf_counter()
    running = {"loss": 0.0, "exact": torch.zeros(ACTION_DIM), "steps": 0}
    progress = tqdm(range(record["step"], args.steps), initial=record["step"], total=args.steps, desc="fine-tune")
    stopped_early = False
    for step in progress:
        chosen = batch_frames(frames.train, step, args.batch_size, args.seed)
        features, prompts, labels = inputs.batch(chosen)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        with autocast():
            logits = action_logits(model, features, prompts, labels).float()
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        running["loss"] += loss.item()
        running["exact"] += token_hits(logits.detach(), labels)[0].float().mean(0).cpu()
        running["steps"] += 1
        progress.set_postfix(loss=f"{loss.item():.3f}")
        record["step"], record["seconds"] = step + 1, round(time.perf_counter() - start, 1)
        done = step + 1 == args.steps
        out_of_time = args.time_limit is not None and time.perf_counter() - run_start > 60 * args.time_limit
        stopped_early = not done and (out_of_time or step + 1 == stop_at_step)
        if (step + 1) % args.eval_every == 0 or done:
            metrics = {"step": step + 1, "train_loss": round(running["loss"] / running["steps"], 4),
                       "train_exact": [round(v, 4) for v in (running["exact"] / running["steps"]).tolist()]}
            running = {"loss": 0.0, "exact": torch.zeros(ACTION_DIM), "steps": 0}
            if len(frames.val):
                metrics.update(evaluate(model, inputs, frames.val, args.batch_size))
            record["history"].append(metrics)
            tqdm.write(f"step {step + 1}: {describe(metrics)}")
        if (step + 1) % args.checkpoint_every == 0 or done or stopped_early:
            checkpoint()
        if stopped_early:
            break
    progress.close()
    for file in frames.files:
        file.close()
    if stopped_early:
        print(f"stopped at step {record['step']} of {args.steps} ({record['seconds']} s in all); the same command "
              f"resumes from {state_file}")
    else:
        print(f"fine-tuned {args.out} in {record['step']} steps ({record['seconds']} s in all)")
    return record
