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
draft). The checkpoint JSON holds them.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..drafts.checkpoints import load_head, save_draft
from ..drafts.eagle_head import (ACTION_BINS, HEAD_KINDS, EagleHead, action_logits, default_core_config,
                                 verifier_action_rows)
from ..vla.checkpoint import load_verifier
from ..vla.constants import ACTION_DIM, ACTION_TOKEN_MIN
from .collect import read_traces

DRAFT_POSITIONS = ACTION_DIM - 1          # a1..a6: a0 is the verifier's own (free) token
TRAIN_STATE = "train_state.pt"
CE_WEIGHT = 0.1
IGNORED = -100                            # cross-entropy label of a non-action verifier token
COPY_BIAS_LR_SCALE = 50                   # one scalar in logit units: it must travel far in few steps


class TraceDataset:
    """Traced steps as training sequences, split into train / validation by episode. With
    `carry`, each step also links the next control step of its episode (`next`, or None)."""

    def __init__(self, directories, verifier, val_fraction: float, carry: bool = False):
        self.steps, val_episodes = [], set()
        for index, directory in enumerate(directories):
            manifest, steps = read_traces(directory)
            if manifest["verifier"] != verifier.name or manifest["hidden_size"] != verifier.model.hidden_size:
                raise ValueError(f"{directory}: traces of verifier '{manifest['verifier']}' (hidden size "
                                 f"{manifest['hidden_size']}), but training for '{verifier.name}' "
                                 f"(hidden size {verifier.model.hidden_size})")
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
            raise ValueError(f"no traced steps in {list(map(str, directories))}")
        self.train = [s for s in self.steps if s["episode_key"] not in val_episodes]
        self.val = [s for s in self.steps if s["episode_key"] in val_episodes]
        embedding = verifier.model.language_model.get_input_embeddings()
        with torch.no_grad():
            for step in self.steps:
                step["token_embeds"] = embedding(step["tokens"]).float()
        self.hidden_rms = float(torch.cat([s["hidden"].float() for s in self.train[:64]]).pow(2).mean().sqrt())

    @staticmethod
    def groups(head: EagleHead, steps) -> list[list]:
        """Steps grouped by the length of the sequence the head reads (so batches need no padding)."""
        groups = defaultdict(list)
        for step in steps:
            length = step["prompt_length"] - head.prompt_start(step["prompt_length"])
            groups[length, step["next"] is not None].append(step)
        return [groups[key] for key in sorted(groups)]

    def batch(self, head: EagleHead, steps, noise: float = 0.0, generator: torch.Generator | None = None):
        """Inputs and next embeddings [b, L, H] (after the prompt: the 6 action positions, then for
        steps with a `next` the 7 early positions), target hidden states and tokens [b, 6 (+ 7)].
        All steps must come from one group."""
        inputs, next_embeds, targets, tokens = [], [], [], []
        for step in steps:
            length = step["prompt_length"]
            start = head.prompt_start(length)
            step_inputs = [step["hidden"][start:length + DRAFT_POSITIONS - 1]]
            step_embeds = [step["input_embeds"][start + 1:].float(), step["token_embeds"][:DRAFT_POSITIONS]]
            step_targets, step_tokens = [step["hidden"][length:]], [step["tokens"][1:]]
            following = step["next"]
            if following is not None:        # hidden states leading to the next a0..a6, this step's a0..a6
                next_length = following["prompt_length"]
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
        return inputs, torch.stack(next_embeds), torch.stack(targets), torch.stack(tokens)


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
    bonus = torch.zeros(len(steps), positions, ACTION_BINS)
    bonus[:, DRAFT_POSITIONS:] = head.copy_bonus(torch.stack([step["tokens"] for step in steps]))
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("traces", type=Path, nargs="+", help="trace directories from spec-vla-collect")
    parser.add_argument("--kind", choices=HEAD_KINDS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory (draft.json, draft.safetensors)")
    parser.add_argument("--verifier", default="miniature")
    parser.add_argument("--layers", type=int, default=1, help="mamba: number of Mamba blocks")
    parser.add_argument("--context", type=int, default=16,
                        help="prompt positions the head reads (the last ones); 0: the whole prompt")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.05, help="input-feature noise, relative to their RMS")
    parser.add_argument("--chain-weight", type=float, default=1.0,
                        help="weight of the loss on drafting from a0 with the head's own predictions (0: off)")
    parser.add_argument("--carry", action="store_true",
                        help="also train guessing the next control step's action from this one (early proposals)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="fraction of episodes held out")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--resume", action="store_true", help=f"continue from --out's {TRAIN_STATE}")


def train(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    verifier = load_verifier(args.verifier)
    dataset = TraceDataset(args.traces, verifier, args.val_fraction, args.carry)
    action_rows = verifier_action_rows(verifier.model).float()
    state_file = args.out / TRAIN_STATE
    if args.resume:
        if not state_file.exists():
            raise SystemExit(f"--resume: {state_file} does not exist")
        head, config = load_head(args.out)
        if config["kind"] != args.kind:
            raise SystemExit(f"--resume: {args.out} holds a '{config['kind']}' draft, not '{args.kind}'")
        if config.get("carry", False) != args.carry:
            raise SystemExit(f"--resume: {args.out} was trained {'with' if config.get('carry') else 'without'} "
                             "--carry; resume it the same way")
    else:
        torch.manual_seed(args.seed)
        head = EagleHead(args.kind, default_core_config(args.kind, verifier.model, args.layers), args.context or None,
                         args.carry)
    head.train()
    param_groups = [{"params": [p for name, p in head.named_parameters() if name != "copy_bias"]}]
    if head.carry:
        param_groups.append({"params": [head.copy_bias], "lr_scale": COPY_BIAS_LR_SCALE, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=args.weight_decay)
    training = {"traces": [str(p) for p in args.traces], "train_steps": len(dataset.train),
                "val_steps": len(dataset.val), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                "noise": args.noise, "chain_weight": args.chain_weight, "seed": args.seed, "step": 0, "seconds": 0.0,
                "most_frequent_baseline": most_frequent_baseline(dataset.train, dataset.val) if dataset.val else []}
    if args.resume:
        saved = torch.load(state_file, weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        training = saved["training"]
    group_of = {id(step): group for group in dataset.groups(head, dataset.train) for step in group}
    print(f"{args.kind} draft: {sum(p.numel() for p in head.parameters()) / 1e6:.2f} M parameters, "
          f"{len(dataset.train)} train / {len(dataset.val)} validation steps; "
          f"most-frequent baseline {describe({'': training['most_frequent_baseline']})}")

    def checkpoint() -> None:
        save_draft(args.out, head, verifier.name, training)
        torch.save({"optimizer": optimizer.state_dict(), "training": training}, state_file)

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
        forced, chained = predict(head, inputs, next_embeds, chain=args.chain_weight > 0,
                                  early=group[0]["next"] is not None)
        bonus = copy_bonus(head, traced, tokens.shape[1])
        loss, hits = loss_and_hits(forced, targets, tokens, action_rows, bonus)
        if chained is not None:
            loss = loss + args.chain_weight * loss_and_hits(chained, targets, tokens, action_rows, bonus)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="spec-vla-train-draft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
