"""Build the action datastore a hybrid draft tree retrieves from (drafts/retrieval.py): the action
tokens of a draft's training traces, each row linked to the step before it in its episode.

    python -m spec_vla_ros.training.datastore OUT.safetensors --traces DIR [DIR ...]
    python -m spec_vla_ros.training.datastore OUT.safetensors --synthetic FIRST_SEED:SCENES:STEPS [...]
        [--verifier miniature] [--threads 1]

`--traces` reads trace directories of spec-vla-collect (the tokens only). `--synthetic` decodes
seeded synthetic scenes greedily (training/collect.synthetic_episode, the images spec-vla-collect
makes for those seeds, no-op steps kept): the same actions without the traces' features, for a
verifier whose traces are gone. Put OUT beside a draft head (its checkpoint directory, or the
directory of drafts above it) as `actions.safetensors`, where the registry finds it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..decoding.decoder import Decoder
from ..drafts.retrieval import ActionDatastore, write_datastore
from ..vla.constants import ACTION_DIM
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.verifiers import load_verifier
from .collect import read_manifest, read_traces, synthetic_episode


def linked(rows: list[tuple[int, int, list[int]]]) -> ActionDatastore:
    """(episode key, step, 7 tokens) rows -> a datastore whose rows know the row of the step before
    them in the same episode (-1 for none)."""
    index = {(episode, step): row for row, (episode, step, _) in enumerate(rows)}
    previous = [index.get((episode, step - 1), -1) for episode, step, _ in rows]
    return ActionDatastore(np.array([tokens for _, _, tokens in rows], dtype=np.int64).reshape(-1, ACTION_DIM),
                           np.array(previous, dtype=np.int64))


def from_traces(directories) -> tuple[ActionDatastore, str]:
    """The tokens of spec-vla-collect trace directories (episodes numbered per directory)."""
    rows, verifiers = [], set()
    for number, directory in enumerate(directories):
        verifiers.add(read_manifest(Path(directory))["verifier"])
        _, steps = read_traces(directory)
        rows += [((number, step["episode"]), step["step"], step["tokens"].tolist()) for step in steps]
    if len(verifiers) != 1:
        raise ValueError(f"trace directories of {len(verifiers)} verifiers ({sorted(verifiers)}); expected one")
    store = linked(rows)
    store.verifier = verifiers.pop()
    return store, f"traces {', '.join(str(d) for d in directories)}"


def from_synthetic(verifier, ranges: list[tuple[int, int, int]]) -> tuple[ActionDatastore, str]:
    """Greedy actions of synthetic scenes: for each (first seed, scenes, steps), scenes seeded
    first..first+scenes-1 with `steps` control steps each."""
    decoder, rows = Decoder(verifier.model), []
    for first, scenes, steps in ranges:
        for seed in range(first, first + scenes):
            instruction, frames = synthetic_episode(seed, steps)
            prompt = prompt_token_ids(verifier.tokenizer, instruction)
            for step, frame in enumerate(frames):
                tokens, _ = decoder.decode(pixel_values(frame, True, verifier.image_normalization), prompt)
                rows.append((seed, step, tokens))
    store = linked(rows)
    store.verifier = verifier.name
    return store, "greedy actions of synthetic scenes " + ", ".join(
        f"seeds {first}..{first + scenes - 1} x {steps} step(s)" for first, scenes, steps in ranges)


def synthetic_range(text: str) -> tuple[int, int, int]:
    """argparse type: FIRST_SEED:SCENES:STEPS."""
    parts = text.split(":")
    if len(parts) != 3 or not all(part.isdigit() for part in parts) or int(parts[1]) < 1 or int(parts[2]) < 1:
        raise argparse.ArgumentTypeError(f"'{text}': expected FIRST_SEED:SCENES:STEPS (integers, scenes and steps >= 1)")
    return int(parts[0]), int(parts[1]), int(parts[2])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spec_vla_ros.training.datastore",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the datastore file to write (actions.safetensors)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--traces", nargs="+", help="spec-vla-collect trace directories")
    source.add_argument("--synthetic", nargs="+", type=synthetic_range, help="FIRST_SEED:SCENES:STEPS")
    parser.add_argument("--verifier", default="miniature", help="for --synthetic: the verifier to decode with")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.traces:
        store, description = from_traces(args.traces)
    else:
        store, description = from_synthetic(load_verifier(args.verifier, "cpu", "auto"), args.synthetic)
    write_datastore(args.out, store, description)
    print(f"{args.out}: {len(store)} actions of verifier '{store.verifier}' ({description})")


if __name__ == "__main__":
    main()
