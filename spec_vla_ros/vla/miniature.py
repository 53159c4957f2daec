"""The embedded miniature verifier: OpenVLA's architecture at toy size, built from a seed.

Same code and kinds of module as OpenVLA-7B (DINOv2-like ViT with registers and LayerScale,
SigLIP-like ViT with a MAP head, the fused projector, Llama-2 with the real 32064-entry
vocabulary and tokenizer ids), narrow and shallow, with an ordinal action head (below) so that
its answers depend on image, instruction and the tokens so far. Deterministic for a seed, on
the CPU in fp32. `spec-vla-write-miniature DIR` writes it in the released checkpoints' HF
layout (vla/checkpoint.py), which the same loader reads back.
"""
from __future__ import annotations

import torch

from .action_tokenizer import LIBERO_GOAL_STATS
from .checkpoint import LoadedVerifier
from .constants import (ACTION_TOKEN_MAX, ACTION_TOKEN_MIN, DEFAULT_UNNORM_KEY, MINIATURE, MINIATURE_NAME,  # noqa: F401
                        MINIATURE_SEED, PAD_TOKEN_ID, PADDED_VOCAB_SIZE)                              # (re-exported)
from .model import OpenVLA, VLAConfig
from .preprocess import OPENVLA_NORMALIZATION, ImageNormalization
from .prompt import build_miniature_tokenizer

MINIATURE_TEXT_CONFIG = {
    "vocab_size": PADDED_VOCAB_SIZE, "pad_token_id": PAD_TOKEN_ID, "hidden_size": 256,
    "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}
MINIATURE_VISION_OVERRIDES = (
    # DINOv2 kind: registers, LayerScale, patch-only position embeddings
    {"patch_size": 14, "embed_dim": 96, "depth": 4, "num_heads": 4, "init_values": 0.1, "reg_tokens": 4,
     "no_embed_class": True},
    # SigLIP kind: no class token, attention-pool (MAP) head
    {"patch_size": 14, "embed_dim": 112, "depth": 4, "num_heads": 4, "mlp_ratio": 3.7362, "class_token": False,
     "global_pool": "map"},
)
# A random lm_head would answer with arbitrary vocabulary entries, always the same ones. The
# miniature instead gets an *ordinal* action head: bin b's row points at angle 2*pi*b/256 in the
# plane of the two directions along which its hidden states vary most (measured on seeded
# calibration inputs, orthogonal to their mean), so nearby hidden states give nearby bins and
# the answer depends on image, instruction and the tokens so far; other rows are scaled down so
# that, like a fine-tuned OpenVLA, it answers with action tokens.
MINIATURE_CALIBRATION_INSTRUCTIONS = ("open the drawer", "put the bowl on the plate", "turn on the stove",
                                      "push the plate to the front", "put the wine bottle on the rack")
MINIATURE_ACTION_LOGIT_SCALE = 8.0
MINIATURE_NON_ACTION_LOGIT_SCALE = 0.05
# The miniature normalizes images as the published OpenVLA-7B checkpoints do (and writes these
# values into its preprocessor_config.json).
MINIATURE_NORMALIZATION = ImageNormalization(OPENVLA_NORMALIZATION.mean, OPENVLA_NORMALIZATION.std,
                                             "miniature (OpenVLA-7B checkpoints' values)")


def miniature_config() -> VLAConfig:
    return VLAConfig(text_config=dict(MINIATURE_TEXT_CONFIG), vision_overrides=MINIATURE_VISION_OVERRIDES)


def calibration_images(generator: torch.Generator, count: int) -> list:
    """Smooth random scenes (upsampled 8 x 8 colour noise), closer to camera images than pixel noise."""
    coarse = torch.randint(0, 256, (count, 3, 8, 8), generator=generator).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(256, 256), mode="bilinear", align_corners=False)
    return [image.permute(1, 2, 0).round().byte().numpy() for image in smooth]


def ordinal_action_head(model: OpenVLA, tokenizer, generator: torch.Generator) -> None:
    """Rewrite the lm_head's action rows as described above MINIATURE_ACTION_LOGIT_SCALE."""
    from .preprocess import pixel_values
    from .prompt import prompt_token_ids
    from .session import VerifierSession

    hidden = []
    for index, image in enumerate(calibration_images(generator, 2 * len(MINIATURE_CALIBRATION_INSTRUCTIONS))):
        instruction = MINIATURE_CALIBRATION_INSTRUCTIONS[index % len(MINIATURE_CALIBRATION_INSTRUCTIONS)]
        session = VerifierSession(model)
        pixels = pixel_values(image, normalization=MINIATURE_NORMALIZATION)
        hidden.append(session.prefill(pixels, prompt_token_ids(tokenizer, instruction)).hidden[-1])
        action_ids = torch.randint(ACTION_TOKEN_MIN, ACTION_TOKEN_MAX + 1, (6,), generator=generator).tolist()
        hidden.extend(session.extend(action_ids).hidden)
    hidden = torch.stack(hidden)
    mean = hidden.mean(0)
    mean_direction = mean / mean.norm()
    centered = hidden - mean
    centered = centered - (centered @ mean_direction)[:, None] * mean_direction   # orthogonal to the mean
    _, singular_values, basis = torch.linalg.svd(centered, full_matrices=False)
    plane = basis[:2] * torch.sign(basis[:2].gather(1, basis[:2].abs().argmax(1, keepdim=True)))  # fixed signs
    radius = (singular_values[:2] / centered.shape[0] ** 0.5).mean()
    angles = 2 * torch.pi * torch.arange(ACTION_TOKEN_MAX + 1 - ACTION_TOKEN_MIN) / (ACTION_TOKEN_MAX + 1 - ACTION_TOKEN_MIN)
    rows = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) @ plane
    with torch.no_grad():
        lm_head = model.language_model.lm_head.weight
        lm_head *= MINIATURE_NON_ACTION_LOGIT_SCALE
        lm_head[ACTION_TOKEN_MIN:ACTION_TOKEN_MAX + 1] = rows * (MINIATURE_ACTION_LOGIT_SCALE / radius)


def build_miniature(seed: int = MINIATURE_SEED) -> LoadedVerifier:
    """The embedded default verifier: deterministic for a seed, on the CPU in fp32."""
    tokenizer = build_miniature_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLA(miniature_config()).eval()
    ordinal_action_head(model, tokenizer, torch.Generator().manual_seed(seed))
    return LoadedVerifier(model, tokenizer, {DEFAULT_UNNORM_KEY: LIBERO_GOAL_STATS.to_json_entry()},
                          f"{MINIATURE}-seed{seed}", MINIATURE_NORMALIZATION)
