"""`spec-vla-collect`: the command line of trace collection (training/collect.py, whose
docstring is this command's --help description): options, checks before the verifier loads,
and the choice of source (synthetic scenes, image folders, a recorded bag, LIBERO rollouts).
A bad argument or an expected failure (a LIBERO renderer that cannot start included) is one line
on stderr and exit status 2. The library loads only once the arguments are checked."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..training.arguments import (DTYPES, CommandError, absolute_path, apply_runtime_arguments, check_counts,
                                  check_new_directory)
from ..vla.constants import MINIATURE
from .arguments import OneLineParser, add_runtime_arguments, library_constant, library_doc, run, verifier_argument

DEFAULT_CONTEXT = library_constant("spec_vla_ros.drafts.eagle_head", "DEFAULT_CONTEXT")
STORAGE_CHOICES = ("auto", *sorted(name for name in DTYPES if name != "auto"))   # training.collect.STORAGE_DTYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=absolute_path, help="new (or empty) directory for the shards and manifest.json")
    parser.add_argument("--source", choices=("synthetic", "images", "bag", "libero"), default="synthetic")
    parser.add_argument("--episodes", type=int, default=20, help="synthetic: number of episodes")
    parser.add_argument("--steps-per-episode", type=int, default=20, help="synthetic: control steps per episode")
    parser.add_argument("--seed", type=int, default=0,
                        help="synthetic: first episode seed; libero: env.seed once per task, resets in sequence "
                             "(OpenVLA's order)")
    parser.add_argument("--images", type=absolute_path,
                        help="images: directory of frames (sub-directories = episodes)")
    parser.add_argument("--instruction", help="images: instruction when instructions.json does not give one")
    parser.add_argument("--bag", type=absolute_path, help="bag: a bag recorded by bag_recorder or `ros2 bag record`")
    parser.add_argument("--task-ids", type=int, nargs="+", help="libero: task ids (default: all 10)")
    parser.add_argument("--episodes-per-task", type=int, default=1, help="libero")
    parser.add_argument("--max-steps", type=int, default=100, help="libero: policy steps per episode")
    parser.add_argument("--verifier", type=verifier_argument, default=MINIATURE,
                        help="'miniature' or an OpenVLA HF directory (recorded in the manifest, where "
                             "spec-vla-train-draft finds it)")
    add_runtime_arguments(parser, "the verifier's dtype, as in spec-vla-eval (default: auto)")
    parser.add_argument("--no-center-crop", dest="center_crop", action="store_false")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT,
                        help="prompt positions kept per step, the last ones: the largest spec-vla-train-draft "
                             f"--context these traces serve (default {DEFAULT_CONTEXT}); 0: the whole prompt")
    parser.add_argument("--shard-steps", type=int, default=64)
    parser.add_argument("--storage-dtype", choices=STORAGE_CHOICES, default="auto",
                        help="auto: a bf16/fp16 verifier's own dtype, float16 for an fp32 one")


def check_arguments(args) -> None:
    """Everything that can be checked before the verifier loads, LIBERO's renderer included."""
    check_new_directory(args.out, "output directory")
    check_counts(args, ("episodes", "steps_per_episode", "shard_steps", "episodes_per_task", "max_steps"))
    if args.source == "images" and (args.images is None or not args.images.is_dir()):
        raise CommandError(f"--source images needs --images DIR, an existing directory (got {args.images})")
    if args.source == "bag" and (args.bag is None or not args.bag.exists()):
        raise CommandError(f"--source bag needs --bag BAG, an existing bag (got {args.bag})")
    if args.source == "libero":
        from sim_bridge.libero_goal import check_headless_rendering
        try:
            check_headless_rendering()
        except RuntimeError as error:
            raise CommandError(str(error)) from None


def collect(args) -> Path:
    check_arguments(args)
    from tqdm import tqdm

    from ..training.collect import (Collector, TraceWriter, collect_episodes, collect_libero, image_episodes,
                                    synthetic_episode, verifier_location)
    from ..vla.verifiers import load_verifier

    apply_runtime_arguments(args)
    verifier = load_verifier(args.verifier, args.device, args.dtype)
    source = {key: value for key, value in vars(args).items() if key != "out"}
    source = json.loads(json.dumps(source, default=str))
    writer = TraceWriter(args.out, verifier, source, args.shard_steps, args.storage_dtype, args.context or None,
                         verifier_location(args.verifier))
    collector = Collector(verifier, writer, args.center_crop)
    if args.source == "synthetic":
        episodes = (synthetic_episode(args.seed + index, args.steps_per_episode) for index in range(args.episodes))
        collect_episodes(collector, tqdm(episodes, total=args.episodes, desc="episodes"))
    elif args.source == "images":
        collect_episodes(collector, tqdm(list(image_episodes(args.images, args.instruction)), desc="episodes"))
    elif args.source == "bag":
        from ..analysis.bags import observation_episodes
        collect_episodes(collector, tqdm(observation_episodes(args.bag), desc="episodes"))
    else:
        collect_libero(collector, args.task_ids, args.episodes_per_task, args.max_steps, args.seed)
    path = writer.close()
    print(f"wrote {writer.manifest['num_steps']} steps ({writer.manifest['dropped_noops']} no-ops dropped) to {path}")
    return path


def main(argv=None) -> None:
    parser = OneLineParser(prog="spec-vla-collect", description=library_doc("spec_vla_ros.training.collect"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run(parser.prog, collect, parser.parse_args(argv))


if __name__ == "__main__":
    main()
