"""`spec-vla-eval`: the command line of the LIBERO-GOAL evaluation (analysis/evaluate.py, whose
docstring is this command's --help description; `--ray` runs it through analysis/ray_eval.py).
Checks everything it can before the verifier and the simulator start: a bad argument, an unfit
checkpoint, a renderer that cannot start or an output directory of other settings is one line on
stderr and exit status 2; Ctrl-C keeps the finished episodes and exits 130. The order: the
arguments, the renderer, then the policy's checks (the model stack loads from there on)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from sim_bridge.constants import (LIBERO_EPISODES_PER_TASK, LIBERO_GOAL_MAX_STEPS, LIBERO_GOAL_NUM_TASKS,
                                  LIBERO_RENDER_SIZE)
from sim_bridge.libero_goal import LiberoGoalEnv, check_headless_rendering

from ..decoding.spec import DEFAULT_NUM_DRAFT_TOKENS, DecoderSpec, check_num_draft_tokens
from ..drafts.kinds import AR, DRAFT_NAMES
from ..vla.constants import COMPILE_MODES, MINIATURE
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP, apply_threads, check_threads
from .arguments import ArgumentParser, fail, library_constant, library_doc, parse_checkpoints

DEFAULT_CONFIGURATIONS = DRAFT_NAMES                  # ar, mamba, llama, history
EVALUATION, RAY_EVALUATION = "spec_vla_ros.analysis.evaluate", "spec_vla_ros.analysis.ray_eval"
RAY_LOCAL = library_constant(RAY_EVALUATION, "LOCAL")                    # --ray without an address
RAY_SEEDING = library_constant(RAY_EVALUATION, "PER_EPISODE_SEEDING")    # the only seeding --ray runs
VLAPolicy = None                 # spec_vla_ros.policy.VLAPolicy, imported by policy_class() (the model stack)

SEEDINGS = {
    "openvla": "OpenVLA's harness: the env is seeded once per task (env.seed(0)) and reset in sequence, "
               "so fixture placements match the published evaluations",
    "per_episode": "seed + episode before every reset: each (task, episode) looks the same whatever ran "
                   "before it (sharded or resumed evaluations)",
}


def policy_class():
    """VLAPolicy, imported on first use: it loads the model stack."""
    global VLAPolicy
    if VLAPolicy is None:
        from ..policy import VLAPolicy
    return VLAPolicy


def check_run_arguments(args) -> None:
    """ValueError (one line) for task ids, counts and threads no run could use."""
    unknown = [task for task in args.tasks if not 0 <= task < LIBERO_GOAL_NUM_TASKS]
    if unknown:
        raise ValueError(f"--tasks {unknown}: LIBERO-GOAL task ids are 0-{LIBERO_GOAL_NUM_TASKS - 1}")
    if not 1 <= args.episodes <= LIBERO_EPISODES_PER_TASK:
        raise ValueError(f"--episodes {args.episodes}: LIBERO-GOAL has {LIBERO_EPISODES_PER_TASK} initial states "
                         f"per task; choose 1-{LIBERO_EPISODES_PER_TASK}")
    if args.max_steps < 1 or args.image_size < 1:
        raise ValueError(f"--max-steps and --image-size must be positive, got {args.max_steps} and {args.image_size}")
    check_threads(args.threads)


def known_settings(args, checkpoints: dict[str, str]) -> dict:
    """The settings run_settings() records that are known before the verifier loads."""
    return {"verifier": args.verifier, "device": args.device, "num_draft_tokens": args.num_draft_tokens,
            "draft_checkpoints": dict(sorted(checkpoints.items())), "max_steps": args.max_steps,
            "image_size": args.image_size, "seed": args.seed, "seeding": args.seeding}


def precheck_settings(output_dir: Path, settings: dict) -> None:
    """check_settings() on what is known before loading, so a mismatched output directory is
    refused in a second, not after the verifier and the simulator have started."""
    from ..analysis.evaluate import SETTINGS_FILE, check_settings

    path = Path(output_dir) / SETTINGS_FILE
    if path.exists():
        recorded = json.loads(path.read_text())
        check_settings(Path(output_dir), {**recorded, **{key: value for key, value in settings.items()
                                                         if key in recorded}})


def main(argv=None) -> int:
    parser = ArgumentParser(prog="spec-vla-eval", description=library_doc(EVALUATION))
    parser.add_argument("--configurations", nargs="+", default=list(DEFAULT_CONFIGURATIONS),
                        help="ar | mamba | llama | history, each optionally :strict, :relaxed[:T] (Spec-VLA's "
                             "exact rule, |draft id - verifier id| <= T, default T 9) or :relaxed-guarded[:T] "
                             "(also both ids action tokens and the gripper on the verifier's side)")
    parser.add_argument("--tasks", nargs="+", type=int, default=list(range(LIBERO_GOAL_NUM_TASKS)),
                        help=f"LIBERO-GOAL task ids (0-{LIBERO_GOAL_NUM_TASKS - 1}); a full evaluation runs all")
    parser.add_argument("--episodes", type=int, default=LIBERO_EPISODES_PER_TASK,
                        help=f"episodes per task, i.e. initial states 0..N-1 (1-{LIBERO_EPISODES_PER_TASK}; "
                             f"a full evaluation: {LIBERO_EPISODES_PER_TASK}; try 1-2 first: an episode of "
                             f"{LIBERO_GOAL_MAX_STEPS} steps takes minutes on a CPU)")
    parser.add_argument("--max-steps", type=int, default=LIBERO_GOAL_MAX_STEPS,
                        help=f"policy steps per episode (LIBERO-GOAL: {LIBERO_GOAL_MAX_STEPS})")
    parser.add_argument("--output", type=Path, default=Path("runs/eval"),
                        help="report directory; rerunning with the same one resumes (same settings only)")
    parser.add_argument("--verifier", default=MINIATURE, help="'miniature' or an OpenVLA HF directory")
    parser.add_argument("--device", default="cpu", help="torch device: cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto",
                        help="auto (the checkpoint's own dtype) | float32 | bfloat16 | float16")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                        help="auto: the verifier's passes compiled (CUDA graphs) on CUDA, eager on the CPU; always: "
                             "compiled on any device; never: eager")
    parser.add_argument("--num-draft-tokens", type=int, default=DEFAULT_NUM_DRAFT_TOKENS,
                        help="tokens a draft proposes per verifier pass (1-7)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="DRAFT=PATH",
                        help="draft checkpoint for mamba or llama, repeatable ([] = the packaged ones, trained "
                             "for the miniature)")
    parser.add_argument("--image-size", type=int, default=LIBERO_RENDER_SIZE, help="rendered image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="env seed (fixture placement)")
    parser.add_argument("--seeding", choices=sorted(SEEDINGS), default=None,
                        help="; ".join(f"{name}: {text}" for name, text in SEEDINGS.items())
                        + " (default: openvla; per_episode with --ray)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    parser.add_argument("--ray", nargs="?", const=RAY_LOCAL, metavar="ADDRESS",
                        help="spread the episodes over Ray actors (one per GPU with --device cuda, else per CPU "
                             "slot): no ADDRESS starts a local instance, 'auto' joins the running cluster; "
                             "always per-episode seeding")
    parser.add_argument("--ray-workers", type=int, default=0,
                        help="with --ray: at most this many actors (0: one per GPU / CPU slot of the cluster)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.ray and args.seeding not in (None, RAY_SEEDING):
        parser.error(f"--ray needs --seeding {RAY_SEEDING}: an episode runs wherever an actor is free, so it must "
                     "be determined by (task, episode) alone")
    try:                                          # the arguments themselves
        check_run_arguments(args)
        check_num_draft_tokens(args.num_draft_tokens, "--num-draft-tokens")
        checkpoints = parse_checkpoints(args.checkpoint)
        configurations = [DecoderSpec.parse(text, checkpoints, args.num_draft_tokens) for text in args.configurations]
    except ValueError as error:
        return fail("spec-vla-eval", error)
    if args.ray in (None, RAY_LOCAL):             # the episodes render here (a cluster's actors render elsewhere)
        try:
            check_headless_rendering()
        except RuntimeError as error:
            return fail("spec-vla-eval", error)
    from ..policy import PolicyConfig

    try:                                          # the policy's cheap checks (checkpoints included)
        base = PolicyConfig(verifier=args.verifier, device=args.device, dtype=args.dtype, compile=args.compile,
                            draft=AR, num_draft_tokens=args.num_draft_tokens)
        for configuration in configurations:
            policy_class().validate(base.with_spec(configuration))
    except ValueError as error:
        return fail("spec-vla-eval", error)

    if args.ray:
        return evaluate_with_ray(args, base, configurations, checkpoints)
    args.seeding = args.seeding or "openvla"
    try:
        precheck_settings(args.output, known_settings(args, checkpoints))
    except ValueError as error:                   # an output directory of a run with other settings
        return fail("spec-vla-eval", error)
    apply_threads(args.threads)
    from ..analysis.evaluate import EPISODES_FILE, REPORT_STEM, run_evaluation

    try:
        policy = policy_class()(base)
    except ValueError as error:                   # a checkpoint that does not load as it is
        return fail("spec-vla-eval", error)
    try:
        with LiberoGoalEnv(image_size=args.image_size, max_steps=args.max_steps, seed=args.seed,
                           seeding=args.seeding) as env:
            report = run_evaluation(env, policy, configurations, args.tasks, args.episodes, args.output,
                                    checkpoints, progress=not args.no_progress)
    except ValueError as error:                   # e.g. a settings check only the loaded verifier can make
        return fail("spec-vla-eval", error)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished episodes are kept in {args.output / EPISODES_FILE}; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    print(report.markdown(args.output))
    print(f"\nreport: {args.output / (REPORT_STEM + '.md')} (+ .json, .csv, .png)")
    return 0


def evaluate_with_ray(args, base, configurations: list[DecoderSpec], checkpoints: dict) -> int:
    """`spec-vla-eval --ray`: the same log and report, the episodes run by Ray actors (ray_eval.py);
    `base`: the PolicyConfig of every configuration."""
    from ..analysis import ray_eval
    from ..analysis.evaluate import EPISODES_FILE, REPORT_STEM

    spec = ray_eval.WorkerSpec(base, checkpoints, {"image_size": args.image_size, "max_steps": args.max_steps,
                                                   "seed": args.seed}, threads=args.threads or 1)   # 0: 1 per actor
    try:
        report, run = ray_eval.evaluate_on_ray(spec, configurations, args.tasks, args.episodes, args.output,
                                               args.ray, args.ray_workers, progress=not args.no_progress)
    except ValueError as error:
        print(f"spec-vla-eval: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished episodes are kept in {args.output / EPISODES_FILE}; "
              "rerun the same command to continue", file=sys.stderr)
        return 130
    for name, reason in run.failed_configurations.items():
        print(f"spec-vla-eval: configuration '{name}' failed: {reason}", file=sys.stderr)
    for configuration, task_id, episode, reason in run.failed_episodes:
        print(f"spec-vla-eval: {configuration} task {task_id} episode {episode} gave up: {reason}", file=sys.stderr)
    if report is None:
        return 1
    print(report.markdown(args.output))
    print(f"\nreport: {args.output / (REPORT_STEM + '.md')} (+ .json, .csv, .png); {run.workers} Ray workers, "
          f"{run.reruns} episode(s) rerun after a fault")
    return 1 if run.failed_configurations or run.failed_episodes else 0


if __name__ == "__main__":
    sys.exit(main())
