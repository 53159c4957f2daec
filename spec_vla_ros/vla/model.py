"""The Prismatic / OpenVLA architecture, built from timm ViTs and a transformers Llama.

Module and parameter names follow the released HF checkpoints exactly, so a real
`openvla-7b-*` state dict loads into this model key for key:

    vision_backbone.featurizer.*        timm vit_large_patch14_reg4_dinov2 (DINOv2 + registers)
    vision_backbone.fused_featurizer.*  timm vit_so400m_patch14_siglip_224 (SigLIP)
    projector.fc1 / fc2 / fc3           GELU MLP, first width 4 x fused vision dim
    language_model.*                    transformers LlamaForCausalLM (vocabulary padded to 32064)

Both ViTs contribute the patch tokens of their second-to-last block, concatenated on channels.
The language model sees: BOS, 256 projected patch embeddings, then the prompt tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from .constants import (DINO_TIMM_NAME, IMAGE_SIZE, PAD_TOKEN_ID, PADDED_VOCAB_SIZE,
                        SIGLIP_TIMM_NAME)


@dataclass
class VLAConfig:
    """What it takes to build the architecture; serialized into the checkpoint's `config.json`.

    `vision_overrides` is empty for real OpenVLA checkpoints (the timm ids say everything); the
    embedded miniature uses it to shrink the two ViTs while keeping their kind (registers and
    LayerScale for DINOv2, no class token and a MAP head for SigLIP).
    """

    text_config: dict = field(default_factory=lambda: {"vocab_size": PADDED_VOCAB_SIZE, "pad_token_id": PAD_TOKEN_ID})
    timm_model_ids: tuple = (DINO_TIMM_NAME, SIGLIP_TIMM_NAME)
    image_size: int = IMAGE_SIZE
    vision_overrides: tuple = ()

    def llama_config(self) -> LlamaConfig:
        return LlamaConfig(**self.text_config)

    def to_dict(self) -> dict:
        return asdict(self)


class LayerScale(nn.Module):
    """timm's LayerScale with OpenVLA's parameter name (`scale_factor`, timm says `gamma`)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def build_vit(timm_id: str, image_size: int, overrides: dict | None) -> VisionTransformer:
    """A timm ViT by registry name, or (miniature) a VisionTransformer with the overrides."""
    if overrides:
        vit = VisionTransformer(img_size=image_size, num_classes=0, **overrides)
    else:
        vit = timm.create_model(timm_id, pretrained=False, num_classes=0, img_size=image_size)
    for block in vit.blocks:
        for name in ("ls1", "ls2"):
            old = getattr(block, name)
            if isinstance(old, timm.layers.LayerScale):
                setattr(block, name, LayerScale(old.gamma.shape[0], old.init_values))
    return vit


def second_to_last_patch_tokens(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch tokens (prefix tokens dropped, no final norm) after the second-to-last block; the
    last block, whose output OpenVLA never uses, is not run."""
    return vit.forward_intermediates(images, indices=[len(vit.blocks) - 2], output_fmt="NLC",
                                     intermediates_only=True, stop_early=True)[0]


class PrismaticVisionBackbone(nn.Module):
    def __init__(self, config: VLAConfig):
        super().__init__()
        overrides = list(config.vision_overrides) or [None, None]
        self.featurizer = build_vit(config.timm_model_ids[0], config.image_size, overrides[0])
        self.fused_featurizer = build_vit(config.timm_model_ids[1], config.image_size, overrides[1])
        self.embed_dim = self.featurizer.embed_dim + self.fused_featurizer.embed_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 6, 224, 224] (DINOv2 channels, then SigLIP channels) -> [B, 256, fused dim]."""
        dino, siglip = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat([second_to_last_patch_tokens(self.featurizer, dino),
                          second_to_last_patch_tokens(self.fused_featurizer, siglip)], dim=2)


class PrismaticProjector(nn.Module):
    """OpenVLA's fused-backbone projector: fc1 -> GELU -> fc2 -> GELU -> fc3."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.act_fn2 = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(patches)))))


class OpenVLA(nn.Module):
    def __init__(self, config: VLAConfig):
        super().__init__()
        self.config = config
        self.vision_backbone = PrismaticVisionBackbone(config)
        llama_config = config.llama_config()
        self.projector = PrismaticProjector(self.vision_backbone.embed_dim, llama_config.hidden_size)
        self.language_model = LlamaForCausalLM(llama_config)

    @property
    def hidden_size(self) -> int:
        return self.language_model.config.hidden_size

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(token_ids)

    def embed_inputs(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings `[BOS, 256 patches, prompt tokens...]` for input_ids that start with BOS."""
        patches = self.projector(self.vision_backbone(pixel_values.to(self.projector.fc1.weight.dtype)))
        tokens = self.embed_tokens(input_ids)
        return torch.cat([tokens[:, :1], patches, tokens[:, 1:]], dim=1)
