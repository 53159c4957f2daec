"""`spec-vla-bench verifier`: how fast is the verifier alone (autoregressive decoding)?"""
from __future__ import annotations

import resource
import time

import numpy as np
import torch
from tqdm import tqdm

from ..vla.checkpoint import CheckpointError
from ..vla.constants import ACTION_DIM
from ..vla.miniature import MINIATURE
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.session import VerifierSession
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP, apply_threads
from ..vla.verifiers import load_verifier
from ..commands.arguments import fail, use_defaults_in_help


def add_arguments(parser) -> None:
    use_defaults_in_help(parser)                 # the command line's conventions (defaults in --help)
    parser.add_argument("--verifier", default=MINIATURE, help="'miniature' or an OpenVLA HF directory")
    parser.add_argument("--device", default="cpu", help="torch device: cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto",
                        help="auto (the checkpoint's own dtype) | float32 | bfloat16 | float16")
    parser.add_argument("--actions", type=int, default=50, help="actions measured (after one warm-up action)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random 256x256 images")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def percentile_row(name: str, values_ms) -> str:
    values = np.asarray(values_ms)
    return f"| {name} | {np.median(values):.2f} | {np.percentile(values, 90):.2f} |"


def run(args) -> dict:
    if args.actions < 1 or args.threads < 0:
        raise SystemExit(fail("spec-vla-bench verifier", f"--actions must be >= 1 and --threads >= 0, got "
                                                          f"{args.actions} and {args.threads}"))
    threads = apply_threads(args.threads)
    start = time.perf_counter()
    try:
        verifier = load_verifier(args.verifier, args.device, args.dtype)
    except (CheckpointError, ValueError, OSError) as error:     # missing or mismatched checkpoint, bad dtype
        raise SystemExit(fail("spec-vla-bench verifier", error)) from None
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(args.seed)
    prompt_ids = prompt_token_ids(verifier.tokenizer, "put the bowl on the plate")
    preprocess_ms, prefill_ms, token_ms, action_ms = [], [], [], []
    sync = torch.cuda.synchronize if str(verifier.device).startswith("cuda") else (lambda: None)
    steps = tqdm(range(args.actions + 1), desc="verifier: AR actions (first = warm-up)", unit="action",
                 disable=getattr(args, "no_progress", False))
    for _ in steps:                                    # the first action warms up and is not counted
        image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        session = VerifierSession(verifier.model)
        t = time.perf_counter()
        pixels = pixel_values(image, True, verifier.image_normalization).to(verifier.device)
        preprocess_ms.append((time.perf_counter() - t) * 1e3)
        t0 = time.perf_counter()
        token = session.prefill(pixels, prompt_ids).greedy()[-1]
        sync()
        t1 = time.perf_counter()
        per_token = []
        for _ in range(ACTION_DIM - 1):
            t = time.perf_counter()
            token = session.extend([token]).greedy()[-1]
            sync()
            per_token.append((time.perf_counter() - t) * 1e3)
        prefill_ms.append((t1 - t0) * 1e3)
        token_ms.extend(per_token)
        action_ms.append((time.perf_counter() - t0) * 1e3)
    preprocess_ms, prefill_ms, action_ms = preprocess_ms[1:], prefill_ms[1:], action_ms[1:]
    token_ms = token_ms[ACTION_DIM - 1:]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"verifier: {verifier.name} on {args.device} ({verifier.dtype}), {args.actions} actions, "
          f"autoregressive greedy decoding, random 256x256 images, {threads} torch thread(s)")
    print(f"load time: {load_s:.2f} s    peak RSS: {peak_rss_mb:.0f} MB")
    print("| measure | median ms | p90 ms |\n|---|---|---|")
    for name, values in (("image preprocessing (OpenVLA's harness path, CPU)", preprocess_ms),
                         ("prefill (vision + projector + LM)", prefill_ms),
                         ("decode per token", token_ms), ("per action (7 tokens)", action_ms)):
        print(percentile_row(name, values))
    return {"threads": threads, "load_s": load_s, "peak_rss_mb": peak_rss_mb, "preprocess_ms": preprocess_ms,
            "prefill_ms": prefill_ms,
            "token_ms": token_ms, "action_ms": action_ms}
