"""Verifiers by name: `miniature` (the embedded default) or the path of an OpenVLA HF directory."""
from __future__ import annotations

from .checkpoint import LoadedVerifier, load_checkpoint, resolve_dtype
from .miniature import MINIATURE, build_miniature


def load_verifier(verifier: str = MINIATURE, device: str = "cpu", dtype: str = "auto") -> LoadedVerifier:
    """`miniature` (the embedded default) or a path to an OpenVLA directory."""
    if verifier == MINIATURE:
        loaded = build_miniature()
        return LoadedVerifier(loaded.model.to(device=device, dtype=resolve_dtype(dtype, device)),
                              loaded.tokenizer, loaded.norm_stats, loaded.name, loaded.image_normalization)
    return load_checkpoint(verifier, device, dtype)
