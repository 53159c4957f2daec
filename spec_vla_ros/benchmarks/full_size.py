"""`spec-vla-bench full-size DIR`: proof that a full-size OpenVLA-7B loads and acts on this machine.

Writes an OpenVLA-7B with random bf16 weights in the released checkpoints' layout
(openvla-7b-finetuned-libero-goal): config.json with their fields (vla.checkpoint.openvla_hf_config),
~5 GB safetensors shards with model.safetensors.index.json (transformers 4.40's default shard
size, which OpenVLA's fine-tuning script saved with), dataset_statistics.json,
preprocessor_config.json and tokenizer files (the miniature's byte-level tokenizer stands in for
Llama-2's: the prompt is longer, ~75 tokens instead of ~25, which makes the prefill a little
slower than the real one). The writing runs in a child process, one shard in memory at a time,
so this process's peak RSS measures loading and acting only. Then the normal loader
(`load_verifier(DIR)`, dtype auto = the checkpoint's bf16) loads it, and one action is decoded
autoregressively and two speculatively with the history draft (the first has no history yet;
the second sees the same frame, so history's guess is right: the best case). Prints load
seconds, peak RSS against the checkpoint's bytes, prefill and per-pass milliseconds, and
seconds per action; deletes what it wrote unless `--keep`. A benchmark, never a test: it writes
~15 GB and needs ~16 GB of memory. The command line: commands/benchmarks/full_size.py.
"""
from __future__ import annotations

import json
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import save_file

from ..vla.action_tokenizer import LIBERO_GOAL_STATS
from ..vla.checkpoint import PREPROCESSOR_CONFIG, STATISTICS, openvla_hf_config, write_index
from ..vla.constants import DEFAULT_UNNORM_KEY
from ..vla.model import OpenVLA, VLAConfig
from ..vla.preprocess import OPENVLA_NORMALIZATION, openvla_preprocessor_config, pixel_values
from ..vla.prompt import build_miniature_tokenizer, prompt_token_ids
from ..vla.session import VerifierSession
from ..vla.threads import apply_threads
from ..vla.verifiers import load_verifier

RELEASED_SHARD_SIZE = "5GB"
WEIGHT_STD = 0.02                  # Llama's initializer_range: activations stay finite through 32 layers
INSTRUCTION = "put the bowl on the plate"


def random_tensor(name: str, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """bf16 weights a forward pass survives: zero biases, unit norm weights, LayerScale at 0.1,
    N(0, 0.02) elsewhere."""
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if name.endswith("scale_factor"):
        return torch.full(shape, 0.1, dtype=torch.bfloat16)
    if len(shape) == 1 and "norm" in name:
        return torch.ones(shape, dtype=torch.bfloat16)
    return torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, WEIGHT_STD, generator=generator)


def write_random_openvla(directory: Path, config: VLAConfig | None = None, max_shard_size: str = RELEASED_SHARD_SIZE,
                         seed: int = 0) -> Path:
    """Write an OpenVLA (default: the 7B) with random bf16 weights in the released layout, shard by
    shard: each shard's tensors are generated, saved and freed before the next."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = config or VLAConfig()
    norm_stats = {DEFAULT_UNNORM_KEY: LIBERO_GOAL_STATS.to_json_entry()}
    with torch.device("meta"):
        shapes = OpenVLA(config).to(torch.bfloat16).state_dict()         # names, shapes, bytes; no memory
    split = split_torch_state_dict_into_shards(shapes, max_shard_size=max_shard_size)
    generator = torch.Generator().manual_seed(seed)
    for filename, keys in split.filename_to_tensors.items():
        shard = {key: random_tensor(key, tuple(shapes[key].shape), generator) for key in keys}
        save_file(shard, directory / filename, metadata={"format": "pt"})
        del shard
    if split.is_sharded:
        write_index(directory, split.tensor_to_filename, shapes.values())
    hf_config = openvla_hf_config(config, norm_stats, torch.bfloat16)
    if config.vision_overrides:                   # shrunken ViTs (tests): the loader must know their sizes
        hf_config["spec_vla_ros"] = {"vision_overrides": list(config.vision_overrides)}
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    (directory / STATISTICS).write_text(json.dumps(norm_stats, indent=2))
    (directory / PREPROCESSOR_CONFIG).write_text(json.dumps(openvla_preprocessor_config(OPENVLA_NORMALIZATION), indent=2))
    build_miniature_tokenizer().save_pretrained(directory)
    return directory


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def benchmark(directory: Path, keep: bool, threads: int, dtype: str, seed: int) -> dict:
    """Write (unless `directory` holds an OpenVLA checkpoint already), load, act; prints each step
    and returns the numbers. What it wrote is deleted afterwards unless `keep`. The caller made sure
    that `directory` holds a checkpoint, is empty or does not exist."""
    from ..decoding.decoder import Decoder
    from ..drafts.history import HistoryDraft

    wrote = not (directory / "config.json").exists()
    apply_threads(threads)
    try:
        if wrote:
            writer = multiprocessing.get_context("spawn").Process(target=write_random_openvla, args=(directory,),
                                                                  kwargs={"seed": seed})
            _, write_s = timed(lambda: (writer.start(), writer.join()))
            if writer.exitcode != 0:
                raise SystemExit(f"spec-vla-bench full-size: writing {directory} failed (exit {writer.exitcode})")
            print(f"wrote OpenVLA-7B with random bf16 weights to {directory} in {write_s:.0f} s", flush=True)
        shards = sorted(directory.glob("model*.safetensors"))
        checkpoint_bytes = sum(f.stat().st_size for f in shards)
        rss_before = peak_rss_bytes()
        verifier, load_s = timed(lambda: load_verifier(str(directory), "cpu", dtype))
        load_peak = peak_rss_bytes()
        parameters = sum(p.numel() for p in verifier.model.parameters())
        print(f"loaded {len(shards)} shards, {checkpoint_bytes / 1e9:.2f} GB, {parameters / 1e9:.2f} B parameters "
              f"as {verifier.dtype} in {load_s:.1f} s; peak RSS {load_peak / 1e9:.2f} GB "
              f"({load_peak / checkpoint_bytes:.2f}x the checkpoint; {rss_before / 1e9:.2f} GB before loading)",
              flush=True)

        image = np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        pixels = pixel_values(image, True, verifier.image_normalization)
        prompt = prompt_token_ids(verifier.tokenizer, INSTRUCTION)
        session = VerifierSession(verifier.model)

        def prefill():
            step = session.prefill(pixels, prompt)
            step.greedy()                                   # logits read, as a decoder does
            return step

        step, prefill_s = timed(prefill)
        positions, token = session.length, step.greedy()[-1]
        _, pass1_s = timed(lambda: session.extend([token]).greedy())         # logits read, as a decoder does
        _, pass4_s = timed(lambda: session.extend([token] * 4).greedy())
        print(f"prefill ({positions} positions: BOS, 256 patches, {len(prompt) - 1} prompt tokens): "
              f"{prefill_s * 1e3:.0f} ms; verifier pass of 1 token: {pass1_s * 1e3:.0f} ms, of 4 tokens: "
              f"{pass4_s * 1e3:.0f} ms", flush=True)
        del session

        (ar_tokens, ar_stats), ar_s = timed(lambda: Decoder(verifier.model).decode(pixels, prompt))
        print(f"autoregressive action: {ar_s:.1f} s, {ar_stats.verifier_passes} verifier passes", flush=True)
        speculative = Decoder(verifier.model, HistoryDraft(), num_draft_tokens=4)
        (first_tokens, first_stats), first_s = timed(lambda: speculative.decode(pixels, prompt))
        (spec_tokens, spec_stats), spec_s = timed(lambda: speculative.decode(pixels, prompt))
        print(f"speculative, history draft: first action (no history) {first_s:.1f} s, "
              f"{first_stats.verifier_passes} passes; same frame again {spec_s:.1f} s, "
              f"{spec_stats.verifier_passes} passes; tokens equal to AR: "
              f"{first_tokens == ar_tokens and spec_tokens == ar_tokens}", flush=True)
        peak = peak_rss_bytes()
        print(f"peak RSS overall: {peak / 1e9:.2f} GB ({peak / checkpoint_bytes:.2f}x the checkpoint's bytes); "
              f"torch threads {threads}")
        return {"checkpoint_bytes": checkpoint_bytes, "shards": len(shards), "parameters": parameters,
                "load_s": load_s, "load_peak_rss_bytes": load_peak, "peak_rss_bytes": peak,
                "prefill_ms": prefill_s * 1e3, "pass_ms": {1: pass1_s * 1e3, 4: pass4_s * 1e3},
                "ar_action_s": ar_s, "speculative_first_action_s": first_s, "speculative_action_s": spec_s,
                "speculative_passes": [first_stats.verifier_passes, spec_stats.verifier_passes],
                "equal_to_ar": first_tokens == ar_tokens and spec_tokens == ar_tokens}
    finally:
        if wrote and not keep and directory.exists():
            shutil.rmtree(directory)
            print(f"deleted {directory}")
