"""`spec-vla-bench verifier`: how fast is the verifier alone (autoregressive decoding)? The
command line: commands/benchmarks/verifier.py."""
from __future__ import annotations

import resource
import time

import numpy as np
import torch
from tqdm import tqdm

from ..vla.constants import ACTION_DIM
from ..vla.preprocess import pixel_values
from ..vla.prompt import prompt_token_ids
from ..vla.session import VerifierSession
from ..vla.verifiers import load_verifier


def percentile_row(name: str, values_ms) -> str:
    values = np.asarray(values_ms)
    return f"| {name} | {np.median(values):.2f} | {np.percentile(values, 90):.2f} |"


def load(verifier_name: str, device: str, dtype: str):
    """(the loaded verifier, seconds it took); the loader's errors as they are (CheckpointError,
    ValueError for a bad dtype, OSError)."""
    start = time.perf_counter()
    verifier = load_verifier(verifier_name, device, dtype)
    return verifier, time.perf_counter() - start


def measure(verifier, device: str, load_s: float, threads: int, actions: int, seed: int,
            progress: bool = True) -> dict:
    """`actions` autoregressive actions on random 256x256 images (after one warm-up action) by the
    verifier loaded on `device` with `threads` torch threads; prints the table and returns the
    series in ms."""
    rng = np.random.default_rng(seed)
    prompt_ids = prompt_token_ids(verifier.tokenizer, "put the bowl on the plate")
    preprocess_ms, prefill_ms, token_ms, action_ms = [], [], [], []
    sync = torch.cuda.synchronize if str(verifier.device).startswith("cuda") else (lambda: None)
    steps = tqdm(range(actions + 1), desc="verifier: AR actions (first = warm-up)", unit="action",
                 disable=not progress)
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
    print(f"verifier: {verifier.name} on {device} ({verifier.dtype}), {actions} actions, "
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
