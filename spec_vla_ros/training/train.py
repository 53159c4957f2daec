"""`spec-vla-train-draft`: train a mamba or llama draft head on verifier traces (self-distillation).

For a traced step with prompt length P the head reads, at positions t (the last `--context`
prompt positions, or all) up to P + 4, the verifier's hidden_t paired with the embedding at
t + 1: the prompt's input embeddings, then the action tokens a0..a5 through the verifier's
frozen embedding. On the six action positions t = P - 1 .. P + 4 it predicts hidden_{t+1}
and token a_{t-P+2}, with Spec-VLA's loss

    SmoothL1(predicted hidden, next hidden) + 0.1 * CE(lm_head(predicted), verifier token)

(the CE over the 256 action rows of the frozen lm_head), applied twice: teacher-forced (every
action position reads the verifier's true hidden state, as the first drafted token of each
pass does) and, weighted by `--chain-weight`, as deployed (from a0 the head feeds its own
predictions forward, as drafted tokens 2, 3, ... do). Gaussian noise on the input hidden
states (EAGLE's feature augmentation), AdamW, warmup then cosine decay; batches come from one
prompt length, so nothing is padded. Validation holds out whole episodes, the last ones of each
trace directory.

With `--carry`, a step followed by the next control step of its episode is read on for 7 more
positions: position i pairs a hidden state (this step's last one, then the next step's) with
this step's token a_i and predicts the next step's hidden state behind its token a_i, with the
same loss; the head's `copy_bias` (added to the logit of this step's token a_i) is learned
with it, at `COPY_BIAS_LR_SCALE` times the learning rate. Deployed, the head drafts these 7
tokens on its own predicted hidden states before the next prefill (`EagleDraft.propose_early`);
the chain loss trains exactly that.

Reported per draft position 1..6 (train and validation): teacher-forced token accuracy, and
chain accuracy = the fraction of steps whose first i proposals are all right (what strict
acceptance keeps), next to the most-frequent-token baseline; with `--carry`, the same chain
accuracy for the 7 early proposals a0..a6, next to proposing the previous action (the history
draft). The checkpoint JSON holds them; a carrying head whose early proposals score no higher
than the previous action's (summed over a0..a6) is deployed copying the previous action instead
of drafting them (`eagle_head.early_guess_mode`: same guesses' worth, no head steps).

Of the verifier, training uses only its token embedding and the 256 action rows of its lm_head,
read from the checkpoint's safetensors (`vla.tensors`): the verifier is never built, so a
draft for OpenVLA-7B trains wherever its traces are, on `--device cuda` or the CPU. Without
`--verifier`, the verifier is the one the traces' manifest names; a `--verifier` that is not
the traces' verifier (name and hidden size) is refused. `--dtype bfloat16|float16` runs the
head's forward and backward under autocast (fp16 with gradient scaling); its weights and the
optimizer state stay fp32, and `auto` is fp32.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlamaConfig

from ..drafts.checkpoints import load_head, save_draft
from ..drafts.eagle_head import ACTION_BINS, EagleHead, action_logits, core_config, verifier_action_rows
from ..drafts.registry import verifier_identity
from ..vla.checkpoint import LoadedVerifier, vla_config_from_hf
from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MAX, ACTION_TOKEN_MIN
from ..vla.miniature import MINIATURE, build_miniature
from ..vla.tensors import EMBED_TOKENS, LM_HEAD, read_tensor
from .arguments import DTYPES, CommandError, apply_runtime_arguments, check_counts, check_new_directory
from .collect import read_manifest, read_traces, recorded_verifier_location

DRAFT_POSITIONS = ACTION_DIM - 1          # a1..a6: a0 is the verifier's own (free) token
TRAIN_STATE = "train_state.pt"
CE_WEIGHT = 0.1
IGNORED = -100                            # cross-entropy label of a non-action verifier token
COPY_BIAS_LR_SCALE = 50                   # one scalar in logit units: it must travel far in few steps


@dataclass
class VerifierParts:
    """What training uses of the verifier, and all it holds of it (never the whole model)."""
    name: str
    llama_config: LlamaConfig          # the text model's config (a llama head copies its layer shapes)
    embedding: torch.Tensor            # [vocab, H] token embedding, as stored
    action_rows: torch.Tensor          # [256, H] lm_head rows of the action tokens 31744..31999

    @property
    def hidden_size(self) -> int:
        return self.llama_config.hidden_size

    @classmethod
    def of(cls, verifier: LoadedVerifier) -> "VerifierParts":
        """From a built verifier (the miniature, which has no directory)."""
        model = verifier.model
        return cls(verifier.name, model.language_model.config,
                   model.language_model.get_input_embeddings().weight.detach(), verifier_action_rows(model))

    @classmethod
    def read(cls, directory) -> "VerifierParts":
        """From an OpenVLA directory's config.json and safetensors: two tensors, nothing built.
        Raises CheckpointError or CommandError."""
        directory = Path(directory)
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise CommandError(f"verifier {directory}: no config.json (expected an OpenVLA HF directory)")
        name, _ = verifier_identity(str(directory))
        llama_config = LlamaConfig(**vla_config_from_hf(json.loads(config_file.read_text())).text_config)
        embedding = read_tensor(directory, EMBED_TOKENS)
        action_rows = read_tensor(directory, LM_HEAD, rows=slice(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1))
        for key, tensor in ((EMBED_TOKENS, embedding), (LM_HEAD, action_rows)):
            if tensor.ndim != 2 or tensor.shape[1] != llama_config.hidden_size:
                raise CommandError(f"verifier {directory}: {key} has shape {tuple(tensor.shape)}, expected "
                                   f"[*, {llama_config.hidden_size}] (config.json's hidden_size)")
        return cls(name, llama_config, embedding, action_rows)


def load_verifier_parts(verifier: str) -> VerifierParts:
    """`miniature` (built, as it has no files) or an OpenVLA directory (two tensors read)."""
    return VerifierParts.of(build_miniature()) if verifier == MINIATURE else VerifierParts.read(verifier)


def traces_verifier(directories) -> tuple[str, str, int]:
    """(location, name, hidden size) of the verifier the traces were collected with: their
    manifests' `verifier_path` (older manifests: the --verifier they were collected with, when it
    is `miniature` or an absolute path). Raises CommandError if they disagree or do not say."""
    found = set()
    for directory in directories:
        manifest = read_manifest(directory)
        location = recorded_verifier_location(manifest)
        if location is None:
            raise CommandError(f"{directory}: its manifest does not say where verifier '{manifest['verifier']}' is; "
                               "pass --verifier DIR")
        found.add((location, manifest["verifier"], manifest["hidden_size"]))
    if len(found) > 1:
        raise CommandError(f"the trace directories were collected with different verifiers: {sorted(found)}")
    return found.pop()


def choose_verifier(directories, requested: str | None) -> str:
    """The verifier to train for: the traces' own when none is requested, else `requested` if it
    is the traces' verifier (same name and hidden size). Raises CommandError."""
    if requested is None:
        location, _, _ = traces_verifier(directories)
        if location != MINIATURE and not Path(location).is_dir():
            raise CommandError(f"the traces were collected with verifier {location}, which is not there any more; "
                               "pass --verifier DIR (the same checkpoint)")
        return location
    name, hidden_size = verifier_identity(requested)
    if requested != MINIATURE and hidden_size is None:
        raise CommandError(f"--verifier {requested}: neither 'miniature' nor an OpenVLA directory with a config.json")
    for directory in directories:
        manifest = read_manifest(directory)
        if (manifest["verifier"], manifest["hidden_size"]) != (name, hidden_size):
            raise CommandError(f"--verifier {requested} is '{name}' (hidden size {hidden_size}), but {directory} "
                               f"holds traces of '{manifest['verifier']}' (hidden size {manifest['hidden_size']}); "
                               "pass the verifier the traces were collected with, or leave --verifier out")
    return requested


class TraceDataset:
    """Traced steps as training sequences, split into train / validation by episode. With
    `carry`, each step also links the next control step of its episode (`next`, or None).
    Batches are built on the CPU and moved to `device`."""

    def __init__(self, directories, verifier: VerifierParts, val_fraction: float, carry: bool = False,
                 device: str = "cpu"):
        self.steps, val_episodes, self.device = [], set(), device
        self.windows = {}                                    # directory -> positions a head may read (None: all)
        for index, directory in enumerate(directories):
            manifest, steps = read_traces(directory)
            if manifest["verifier"] != verifier.name or manifest["hidden_size"] != verifier.hidden_size:
                raise CommandError(f"{directory}: traces of verifier '{manifest['verifier']}' (hidden size "
                                   f"{manifest['hidden_size']}), but training for '{verifier.name}' "
                                   f"(hidden size {verifier.hidden_size})")
            self.windows[str(directory)] = manifest["prompt_window"]
            by_position = {(step["episode"], step["step"]): step for step in steps}
            for step in steps:
                step["episode_key"] = (index, step["episode"])
                step["next"] = by_position.get((step["episode"], step["step"] + 1)) if carry else None
            self.steps.extend(steps)
            # The last episodes of each directory are held out, so every source is validated.
            episodes = sorted({step["episode_key"] for step in steps})
            num_val = max(1, round(val_fraction * len(episodes))) if len(episodes) > 1 else 0
            val_episodes.update(episodes[len(episodes) - num_val:])
        if not self.steps:
            raise CommandError(f"no traced steps in {list(map(str, directories))} (every step a no-op?); collect more")
        self.train = [s for s in self.steps if s["episode_key"] not in val_episodes]
        self.val = [s for s in self.steps if s["episode_key"] in val_episodes]
        for step in self.steps:
            step["token_embeds"] = F.embedding(step["tokens"], verifier.embedding).float()
        self.hidden_rms = float(torch.cat([s["hidden"].float() for s in self.train[:64]]).pow(2).mean().sqrt())

    def check_context(self, context: int | None) -> None:
        """A head reading `context` prompt positions (None: all) needs traces that kept them."""
        for directory, window in self.windows.items():
            if window is not None and (context is None or context > window):
                wanted = "the whole prompt" if context is None else f"{context}"
                raise CommandError(f"{directory}: traces keep the last {window} prompt positions, but --context asks "
                                   f"for {wanted}; train with --context {window} or less, or recollect with "
                                   f"spec-vla-collect --context {context or 0}")

    @staticmethod
    def groups(head: EagleHead, steps) -> list[list]:
        """Steps grouped by the length of the sequence the head reads (so batches need no padding)."""
        groups = defaultdict(list)
        for step in steps:
            length = step["window"] - head.prompt_start(step["window"])
            groups[length, step["next"] is not None].append(step)
        return [groups[key] for key in sorted(groups)]

    def batch(self, head: EagleHead, steps, noise: float = 0.0, generator: torch.Generator | None = None):
        """Inputs and next embeddings [b, L, H] (after the prompt: the 6 action positions, then for
        steps with a `next` the 7 early positions), target hidden states and tokens [b, 6 (+ 7)].
        All steps must come from one group. Positions count from each trace's prompt window."""
        inputs, next_embeds, targets, tokens = [], [], [], []
        for step in steps:
            length = step["window"]
            start = head.prompt_start(length)
            step_inputs = [step["hidden"][start:length + DRAFT_POSITIONS - 1]]
            step_embeds = [step["input_embeds"][start + 1:].float(), step["token_embeds"][:DRAFT_POSITIONS]]
            step_targets, step_tokens = [step["hidden"][length:]], [step["tokens"][1:]]
            following = step["next"]
            if following is not None:        # hidden states leading to the next a0..a6, this step's a0..a6
                next_length = following["window"]
                step_inputs += [step["hidden"][-1:], following["hidden"][next_length - 1:-1]]
                step_embeds.append(step["token_embeds"])
                step_targets.append(following["hidden"][next_length - 1:])
                step_tokens.append(following["tokens"])
            inputs.append(torch.cat(step_inputs).float())
            next_embeds.append(torch.cat(step_embeds))
            targets.append(torch.cat(step_targets).float())
            tokens.append(torch.cat(step_tokens))
        inputs = torch.stack(inputs)
        if noise:
            inputs = inputs + noise * self.hidden_rms * torch.randn(inputs.shape, generator=generator)
        return tuple(t.to(self.device) for t in (inputs, torch.stack(next_embeds), torch.stack(targets),
                                                  torch.stack(tokens)))


def predict(head: EagleHead, inputs, next_embeds, chain: bool,
            early: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predicted hidden states at the 6 action positions (+ the 7 early ones) [b, 6 (+ 7), H]:
    teacher-forced (each from the verifier's true inputs, as the first drafted token of every
    pass) and, with `chain`, as drafted (each later step reads the previous prediction, as
    EagleDraft.propose and propose_early do; the paired tokens are the verifier's, and in the
    early positions the previous action's, exactly as deployed). All continue from one pass
    over the prompt."""
    prompt = inputs.shape[1] - DRAFT_POSITIONS - (ACTION_DIM if early else 0)
    action_end = prompt + DRAFT_POSITIONS
    core = head.core
    _, state = head(inputs[:, :prompt], next_embeds[:, :prompt])
    after_prompt = core.snapshot(state)
    forced, state = head(inputs[:, prompt:action_end], next_embeds[:, prompt:action_end], state)
    after_action = core.snapshot(state)
    if early:
        forced_early, state = head(inputs[:, action_end:], next_embeds[:, action_end:], state)
        forced = torch.cat([forced, forced_early], dim=1)
    if not chain:
        return forced, None
    chained_early = []
    if early:               # first, while a Llama cache still holds the action's own positions
        state = core.restore(state, after_action)
        hidden = inputs[:, action_end]
        for position in range(ACTION_DIM):
            predicted, state = head(hidden[:, None], next_embeds[:, action_end + position, None], state)
            hidden = predicted[:, 0]
            chained_early.append(hidden)
    state = core.restore(state, after_prompt)
    hidden, chained = inputs[:, prompt], []
    for position in range(DRAFT_POSITIONS):
        predicted, state = head(hidden[:, None], next_embeds[:, prompt + position, None], state)
        hidden = predicted[:, 0]
        chained.append(hidden)
    return forced, torch.stack(chained + chained_early, dim=1)


def copy_bonus(head: EagleHead, steps, positions: int) -> torch.Tensor | None:
    """Logit bonus [b, positions, 256]: the head's copy bias on each early position's previous
    token (this step's own), zero on the action positions; None for a group without early ones."""
    if steps[0]["next"] is None:
        return None
    device = head.copy_bias.device
    bonus = torch.zeros(len(steps), positions, ACTION_BINS, device=device)
    bonus[:, DRAFT_POSITIONS:] = head.copy_bonus(torch.stack([step["tokens"] for step in steps]).to(device))
    return bonus


def loss_and_hits(predicted, targets, tokens, action_rows, bonus: torch.Tensor | None = None):
    """A verifier token outside the action range (rare, but greedy decoding allows it) is left out
    of the cross-entropy and counts as a miss: the head only proposes action tokens."""
    logits = action_logits(predicted, action_rows)
    if bonus is not None:
        logits = logits + bonus
    labels = tokens - ACTION_TOKEN_MIN
    labels = labels.masked_fill((labels < 0) | (labels >= action_rows.shape[0]), IGNORED)
    cross_entropy = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORED)
    return F.smooth_l1_loss(predicted, targets) + CE_WEIGHT * cross_entropy, logits.argmax(-1) == labels


@torch.no_grad()
def accuracy(head, action_rows, dataset: TraceDataset, steps, batch_size: int) -> dict[str, list]:
    """Per draft position over `steps`: teacher-forced and chain accuracy; for steps with a next
    step, the chain accuracy of the 7 early proposals and of the previous action as proposals."""
    forced, chain, early_chain, history = [], [], [], []
    for group in dataset.groups(head, steps):
        early = group[0]["next"] is not None
        for i in range(0, len(group), batch_size):
            inputs, next_embeds, targets, tokens = dataset.batch(head, group[i:i + batch_size])
            predicted_forced, predicted_chain = predict(head, inputs, next_embeds, chain=True, early=early)
            forced.append(loss_and_hits(predicted_forced, targets, tokens, action_rows)[1][:, :DRAFT_POSITIONS])
            bonus = copy_bonus(head, group[i:i + batch_size], tokens.shape[1])
            chain_hits = loss_and_hits(predicted_chain, targets, tokens, action_rows, bonus)[1]
            chain.append(chain_hits[:, :DRAFT_POSITIONS])
            if early:
                early_chain.append(chain_hits[:, DRAFT_POSITIONS:])
                history += [step["tokens"] == step["next"]["tokens"] for step in group[i:i + batch_size]]
    metrics = {"accuracy": torch.cat(forced).float().mean(0).tolist(),
               "chain_accuracy": torch.cat(chain).float().cumprod(dim=1).mean(0).tolist()}
    if early_chain:
        metrics["early_chain_accuracy"] = torch.cat(early_chain).float().cumprod(dim=1).mean(0).tolist()
        metrics["history_early_accuracy"] = torch.stack(history).float().cumprod(dim=1).mean(0).tolist()
    return metrics


def most_frequent_baseline(train_steps, val_steps) -> list[float]:
    """Validation accuracy of always proposing, per position, the most frequent training token."""
    modes = torch.stack([s["tokens"][1:] for s in train_steps]).mode(dim=0).values
    return (torch.stack([s["tokens"][1:] for s in val_steps]) == modes).float().mean(0).tolist()


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def evaluate(head, action_rows, dataset: TraceDataset, batch_size: int) -> dict:
    head.eval()
    metrics = {}
    for split, steps in (("train", dataset.train[:max(len(dataset.val), 64)]), ("val", dataset.val)):
        if steps:
            metrics.update({f"{split}_{name}": values
                            for name, values in accuracy(head, action_rows, dataset, steps, batch_size).items()})
    head.train()
    return metrics


def describe(metrics: dict) -> str:
    return "  ".join(f"{name} [{' '.join(f'{v:.2f}' for v in values)}]" for name, values in metrics.items()
                     if isinstance(values, list) and name != "traces")


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_arguments(args) -> None:
    """Everything that can be checked before any tensor is read."""
    for directory in args.traces:
        read_manifest(directory)                      # missing or foreign: one line, now
    if args.resume:
        if not (args.out / TRAIN_STATE).is_file():
            raise CommandError(f"--resume: {args.out / TRAIN_STATE} does not exist")
    else:
        check_new_directory(args.out, "--out")
    check_counts(args, ("steps", "batch_size", "eval_every", "checkpoint_every", "layers", "d_state", "expand"))
    if not 0 <= args.val_fraction < 1:
        raise CommandError(f"--val-fraction {args.val_fraction}: expected a fraction in [0, 1)")
    assert args.dtype in DTYPES


def train(args, verifier: VerifierParts | None = None) -> dict:
    """Train (or `--resume`) a draft head; `verifier` overrides reading it (tests)."""
    check_arguments(args)
    apply_runtime_arguments(args)
    verifier_location = choose_verifier(args.traces, args.verifier)
    verifier = verifier or load_verifier_parts(verifier_location)
    device = torch.device(args.device)
    autocast_dtype = AUTOCAST_DTYPES.get(args.dtype)
    dataset = TraceDataset(args.traces, verifier, args.val_fraction, args.carry, device)
    dataset.check_context(args.context or None)
    action_rows = verifier.action_rows.to(device=device, dtype=torch.float32)
    state_file = args.out / TRAIN_STATE
    if args.resume:
        head, config = load_head(args.out)
        if config["kind"] != args.kind:
            raise CommandError(f"--resume: {args.out} holds a '{config['kind']}' draft, not '{args.kind}'")
        if config.get("carry", False) != args.carry:
            raise CommandError(f"--resume: {args.out} was trained {'with' if config.get('carry') else 'without'} "
                               "--carry; resume it the same way")
        if config["context"] != (args.context or None):
            raise CommandError(f"--resume: {args.out} reads --context {config['context'] or 0}; resume it the same way")
    else:
        torch.manual_seed(args.seed)
        core = core_config(args.kind, verifier.llama_config, args.layers, args.d_state, args.expand)
        head = EagleHead(args.kind, core, args.context or None, args.carry)
    head.to(device).train()
    param_groups = [{"params": [p for name, p in head.named_parameters() if name != "copy_bias"]}]
    if head.carry:
        param_groups.append({"params": [head.copy_bias], "lr_scale": COPY_BIAS_LR_SCALE, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    training = {"traces": [str(p) for p in args.traces], "verifier_path": verifier_location,
                "train_steps": len(dataset.train), "val_steps": len(dataset.val), "steps": args.steps,
                "batch_size": args.batch_size, "lr": args.lr, "noise": args.noise, "chain_weight": args.chain_weight,
                "seed": args.seed, "device": args.device, "dtype": args.dtype, "step": 0, "seconds": 0.0,
                "most_frequent_baseline": most_frequent_baseline(dataset.train, dataset.val) if dataset.val else []}
    if args.resume:
        saved = torch.load(state_file, weights_only=False, map_location=device)
        optimizer.load_state_dict(saved["optimizer"])
        if "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        training = saved["training"]
    group_of = {id(step): group for group in dataset.groups(head, dataset.train) for step in group}
    print(f"{args.kind} draft for '{verifier.name}': {sum(p.numel() for p in head.parameters()) / 1e6:.2f} M "
          f"parameters, {len(dataset.train)} train / {len(dataset.val)} validation steps on {args.device}; "
          f"most-frequent baseline {describe({'': training['most_frequent_baseline']})}")

    def checkpoint() -> None:
        save_draft(args.out, head, verifier.name, training)
        torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "training": training},
                   state_file)

    generator = torch.Generator()
    start = time.perf_counter() - training["seconds"]
    progress = tqdm(range(training["step"], args.steps), initial=training["step"], total=args.steps, desc="train")
    for step in progress:
        generator.manual_seed(args.seed * 1_000_003 + step)     # batches depend only on the step: resumable
        group = group_of[id(dataset.train[int(torch.randint(len(dataset.train), (), generator=generator))])]
        picks = torch.randint(len(group), (args.batch_size,), generator=generator).tolist()
        traced = [group[i] for i in picks]
        inputs, next_embeds, targets, tokens = dataset.batch(head, traced, args.noise, generator)
        for param_group in optimizer.param_groups:
            param_group["lr"] = param_group.get("lr_scale", 1.0) * learning_rate(step, args.steps, args.lr, args.warmup)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            forced, chained = predict(head, inputs, next_embeds, chain=args.chain_weight > 0,
                                      early=group[0]["next"] is not None)
        forced, chained = forced.float(), None if chained is None else chained.float()
        bonus = copy_bonus(head, traced, tokens.shape[1])
        loss, hits = loss_and_hits(forced, targets, tokens, action_rows, bonus)
        if chained is not None:
            loss = loss + args.chain_weight * loss_and_hits(chained, targets, tokens, action_rows, bonus)[0]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        progress.set_postfix(loss=f"{loss.item():.4f}", acc=f"{hits.float().mean().item():.2f}")
        training["step"], training["seconds"] = step + 1, round(time.perf_counter() - start, 1)
        done = step + 1 == args.steps
        if (step + 1) % args.eval_every == 0 or done:
            training.update(evaluate(head, action_rows, dataset, args.batch_size))
            if head.carry:
                training["copy_bias"] = round(head.copy_bias.item(), 4)
            tqdm.write(f"step {step + 1}: {describe(training)}")
        if (step + 1) % args.checkpoint_every == 0 or done:
            checkpoint()
    print(f"saved {args.out} after {training['step']} steps ({training['seconds']} s)")
    print(json.dumps({k: v for k, v in training.items() if isinstance(v, list) and k != "traces"}))
    return training
