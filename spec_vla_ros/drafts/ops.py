"""Small tensor operations of the draft heads' one-token steps.

A draft's proposal step on the CPU handles one row at a time, where dispatch and
per-call set-up cost more than the arithmetic (miniature, one thread: torch's fused
`rms_norm` takes ~30 us for one 256-wide row, the formula below ~10 us).
"""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """[..., H] -> [..., H]: LlamaRMSNorm's formula (x / sqrt(mean(x^2) + eps), computed in fp32,
    times the weight), the same function as torch.nn.RMSNorm up to float rounding."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
