"""The cost model of OpenVLA-7B on a GPU, written down once (printed by `spec-vla-bench cost`,
benchmarks/cost.py; used beside the measurements of `spec-vla-bench gpu` and `decode`).

For every part of one action -- the two vision backbones, the projector, the language model's
prefill, a verifier pass over n new tokens, and one step of each draft -- it counts

    FLOPs            2 per multiply-add of every matrix product (linear layers, attention);
    weight bytes     every parameter the part *executes*, read once per call (bf16: 2 bytes),
                     plus the KV cache it reads (attention over earlier positions);
    kernels          GPU kernels an eager PyTorch forward launches (one per dispatched non-view op,
                     counted per layer, see KERNELS_*; `DeviceSpec.launch_us` of host time each),

and turns them into times on a named device:

    roofline time = max(FLOPs / peak FLOP/s, bytes / memory bandwidth)
    eager time    = max(roofline time, kernels x launch overhead)

(the CPU launches kernels while the GPU runs earlier ones, so the slower of the two sets the
pace). Activation traffic is not counted: at ~280 positions it is under ~10 % of the weight
bytes of a prefill and negligible for a pass of <= 8 tokens.

The shapes are read from the same configuration the model is built from (`shape_from_config`,
duck-typed over vla.model.VLAConfig, so this module imports no torch). What the code executes,
checked against timm 1.0 and transformers 5:

- each ViT runs its blocks up to the second-to-last, whose patch tokens are used (timm's
  `forward_intermediates(..., stop_early=True)`; VIT_RUNS_LAST_BLOCK is False); the last block,
  the final norm and SigLIP's attention-pool head are not run;
- the language model runs every layer over every new position; the lm_head (all 32064 rows)
  only over the positions whose logits are read (1 + proposals); a tree pass (decoding/decoder.py)
  runs them over the pending token and every node, each attending to the whole prefix and, under
  the tree mask, to the pass's positions (attention computed densely: n x (past + n) pairs);
- a draft step (drafts/eagle_head.py): `fc(concat(hidden, embed(token)))`, the core (Mamba blocks
  or one Llama decoder layer), the head's RMSNorm, and logits over the 256 action rows of the
  verifier's lm_head only; `begin` runs the head once over the last `context` prompt positions;
  a draft tree (EAGLE-2) runs one step for its first level, then one batched step of top_k rows per
  further level (a level of r rows counted as one call over r positions);
- the history draft does no model work.

Test (test/test_cost_model.py): the parameter counts below equal those of the modules built on
the meta device, per part.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# Llama-2 7B: transformers' LlamaConfig defaults, which VLAConfig() keeps (OpenVLA-7B's text config).
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": None, "vocab_size": 32064}
# timm's VisionTransformer defaults, and the two timm models OpenVLA-7B uses (timm 1.0 registry).
VIT_DEFAULTS = {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0,
                "class_token": True, "reg_tokens": 0, "no_embed_class": False, "init_values": None,
                "global_pool": "token", "qkv_bias": True, "in_chans": 3, "pos_embed": "learn"}
KNOWN_VITS = {
    "vit_large_patch14_reg4_dinov2.lvd142m": {"patch_size": 14, "embed_dim": 1024, "depth": 24, "num_heads": 16,
                                              "init_values": 1e-5, "reg_tokens": 4, "no_embed_class": True},
    "vit_so400m_patch14_siglip_224": {"patch_size": 14, "embed_dim": 1152, "depth": 27, "num_heads": 16,
                                      "mlp_ratio": 3.7362, "class_token": False, "global_pool": "map"},
}
ACTION_ROWS = 256                # logits of the draft heads: the lm_head's action rows only
BF16_BYTES = 2
DEFAULT_PROMPT_TOKENS = 24       # BOS + a LIBERO instruction's prompt + 29871: ~20-30 Llama-2 tokens
DEFAULT_DRAFT_CONTEXT = 16       # = drafts.eagle_head.DEFAULT_CONTEXT, the prompt positions a head reads in `begin`
                                 # (a test checks they agree; not imported: this module stays free of torch)
MAX_PASS_TOKENS = 8
# vla/model.py reads the second-to-last block through timm's get_intermediate_layers, which runs the
# last block too (its output unused). False once the model stops early (forward_intermediates with
# stop_early=True gives identical tokens); test/test_cost_model.py checks this against the code.
VIT_RUNS_LAST_BLOCK = False

# Eager PyTorch: one kernel launch per dispatched non-view op. Counted with torch.profiler as the
# top-level aten ops of one call on the CPU (torch 2.14, transformers 5.24, timm 1.0; depth
# differences of the tiny architecture, benchmarks/gpu.count_dispatched_ops), and checked
# in test/test_cost_model.py; `spec-vla-bench gpu` counts them again on the machine it runs on.
KERNELS_PER_LLAMA_LAYER = 40     # 2 RMSNorms in bf16 (cast, pow, mean, add, rsqrt, mul, cast, weight),
                                 # q/k/v/o, rotary on q and k, cache cat, sdpa, residuals, gate/up/SiLU/mul/down
KERNELS_PER_MODEL_CALL = 24      # embedding, rotary tables, mask, final norm, lm_head, logits cast
KERNELS_PER_VIT_BLOCK = 14       # 2 LayerNorms, qkv, sdpa, proj, 2 LayerScales, 2 adds, fc1, GELU, fc2
KERNELS_VISION_STEM = 5          # per ViT: patch conv, flatten, position add, prefix cat
KERNELS_PROJECTOR = 5            # 3 linears, 2 GELUs
# A draft's proposal step (EagleHead.step: the cores' step_rows, no module calls), counted once its
# token's fc input is cached (drafts/eagle_head.py computes it once per token id):
KERNELS_PER_MAMBA_BLOCK = 33     # pure-PyTorch step (drafts/mamba.py); fewer with mamba_ssm's fused update
KERNELS_PER_HEAD = 7             # fc's hidden half, + token input, RMSNorm, action logits, argmax
KERNELS_LLAMA_DRAFT_LAYER = 37   # LlamaCore.step_rows: rotary table, 2 fused RMSNorms, q/k/v/o, rotary,
                                 # cache update, sdpa, residuals, gate/up/SiLU/mul/down (no mask)


@dataclass(frozen=True)
class DeviceSpec:
    """A device's peaks. FLOP/s: dense bf16 tensor-core with fp32 accumulate; bandwidth: memory."""

    name: str
    peak_tflops: float
    bandwidth_tbs: float
    source: str
    launch_us: float = 10.0      # eager PyTorch: ~5-10 us of host time per op (dispatch + launch); assumed

    def roofline_ms(self, flops: float, bytes_read: float) -> float:
        return max(flops / (self.peak_tflops * 1e12), bytes_read / (self.bandwidth_tbs * 1e12)) * 1e3

    def eager_ms(self, flops: float, bytes_read: float, kernels: int) -> float:
        return max(self.roofline_ms(flops, bytes_read), kernels * self.launch_us * 1e-3)


H200 = DeviceSpec("H200 SXM", 989.0, 4.8,
                  "NVIDIA H200 Tensor Core GPU datasheet: BF16 tensor 1,979 TFLOPS with 2:4 sparsity, "
                  "i.e. 989 dense; HBM3e 4.8 TB/s")
RTX_4090 = DeviceSpec("RTX 4090", 165.2, 1.008,
                      "NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090): BF16 tensor with FP32 "
                      "accumulate 165.2 TFLOPS dense; GDDR6X 1,008 GB/s")
DEVICES = {"h200": H200, "rtx4090": RTX_4090}


@dataclass(frozen=True)
class Cost:
    """One call's work: FLOPs, bytes read from memory (weights, KV cache, recurrent state, embedding
    rows), eager kernel launches, and how many of those bytes are parameters (`weight_params`)."""

    flops: float = 0.0
    bytes: float = 0.0
    kernels: int = 0
    weight_params: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes, self.kernels + other.kernels,
                    self.weight_params + other.weight_params)

    def times(self, count: int) -> "Cost":
        return Cost(self.flops * count, self.bytes * count, self.kernels * count, self.weight_params * count)

    def roofline_ms(self, device: DeviceSpec) -> float:
        return device.roofline_ms(self.flops, self.bytes)

    def eager_ms(self, device: DeviceSpec) -> float:
        return device.eager_ms(self.flops, self.bytes, self.kernels)


# --- shapes ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VitShape:
    width: int
    depth: int
    mlp: int                     # MLP hidden width: int(width x mlp_ratio), as timm computes it
    patch: int
    patches: int                 # (image_size / patch)^2
    prefix_tokens: int           # class token + registers
    pos_embed_tokens: int
    layer_scale: bool
    map_head: bool               # SigLIP's attention-pool head (built, never run here)
    in_chans: int = 3

    @property
    def tokens(self) -> int:
        return self.patches + self.prefix_tokens

    def block_parameters(self) -> int:
        d, h = self.width, self.mlp
        attention = d * 3 * d + 3 * d + d * d + d
        mlp = d * h + h + h * d + d
        return attention + mlp + 2 * 2 * d + (2 * d if self.layer_scale else 0)

    def stem_parameters(self) -> int:
        """Patch embedding, position embedding, class / register tokens."""
        d = self.width
        return self.in_chans * self.patch ** 2 * d + d + self.pos_embed_tokens * d + self.prefix_tokens * d

    def unused_parameters(self) -> int:
        """Built but never run by the package: the final norm and SigLIP's attention-pool head."""
        d, h = self.width, self.mlp
        head = (d + (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + 2 * d + (d * h + h + h * d + d)
                if self.map_head else 0)
        return 2 * d + head

    def parameters(self) -> int:
        return self.stem_parameters() + self.depth * self.block_parameters() + self.unused_parameters()

    @property
    def blocks_run(self) -> int:
        return self.depth if VIT_RUNS_LAST_BLOCK else self.depth - 1

    def cost(self) -> Cost:
        """One image through the stem and the blocks that run (see VIT_RUNS_LAST_BLOCK)."""
        t, d = self.tokens, self.width
        stem_flops = 2 * self.patches * self.in_chans * self.patch ** 2 * d
        block_flops = 2 * t * (4 * d * d + 2 * d * self.mlp) + 2 * 2 * t * t * d     # linears; QK^T and AV
        weights = self.stem_parameters() + self.blocks_run * self.block_parameters()
        return Cost(stem_flops + self.blocks_run * block_flops, weights * BF16_BYTES,
                    KERNELS_VISION_STEM + self.blocks_run * KERNELS_PER_VIT_BLOCK, weights)


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def kv_width(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def layer_parameters(self) -> int:
        d = self.hidden
        return 2 * d * d + 2 * d * self.kv_width + 3 * d * self.intermediate + 2 * d

    def parameters(self) -> dict:
        d = self.hidden
        return {"embed_tokens": self.vocab * d, "layers": self.layers * self.layer_parameters(), "norm": d,
                "lm_head": self.vocab * d}

    def layer_cost(self, new: int, past: int, tree: bool = False) -> Cost:
        """One decoder layer over `new` positions after `past` cached ones (causal attention; `tree`:
        under a tree mask, computed densely over every pair)."""
        d = self.hidden
        attended = new * past + (new * new if tree else new * (new + 1) // 2)      # query-key pairs
        flops = 2 * new * (self.layer_parameters() - 2 * d) + 2 * 2 * attended * d
        kv_bytes = 2 * past * self.kv_width * BF16_BYTES             # read K and V of earlier positions
        return Cost(flops, self.layer_parameters() * BF16_BYTES + kv_bytes, KERNELS_PER_LLAMA_LAYER,
                    self.layer_parameters())

    def forward_cost(self, new: int, past: int, logits: int, tree: bool = False) -> Cost:
        """The model over `new` positions (embedding lookups, every layer, final norm) and the
        lm_head over the last `logits` of them: one verifier pass (`tree`: under a tree mask)."""
        d = self.hidden
        lm_head = Cost(2 * logits * d * self.vocab, (self.vocab * d + d) * BF16_BYTES, KERNELS_PER_MODEL_CALL,
                       self.vocab * d + d)                             # lm_head and the final norm
        mask = Cost(0, new * (past + new), 1) if tree else Cost()      # the boolean tree mask, built and read
        return self.layer_cost(new, past, tree).times(self.layers) + lm_head + Cost(0, new * d * BF16_BYTES, 0) + mask


@dataclass(frozen=True)
class ProjectorShape:
    vision: int
    llm: int

    def parameters(self) -> int:
        v, l = self.vision, self.llm
        return v * 4 * v + 4 * v + 4 * v * l + l + l * l + l

    def cost(self, patches: int) -> Cost:
        return Cost(2 * patches * self.parameters(), self.parameters() * BF16_BYTES, KERNELS_PROJECTOR,
                    self.parameters())


@dataclass(frozen=True)
class VLAShape:
    dino: VitShape
    siglip: VitShape
    projector: ProjectorShape
    llm: LlamaShape

    def parameter_counts(self) -> dict:
        """Parameters per module, named as in vla.model.OpenVLA (built, whether run or not)."""
        llm = self.llm.parameters()
        return {"vision_backbone.featurizer": self.dino.parameters(),
                "vision_backbone.fused_featurizer": self.siglip.parameters(),
                "projector": self.projector.parameters(),
                "language_model.model.embed_tokens": llm["embed_tokens"],
                "language_model.model.layers": llm["layers"],
                "language_model.model.norm": llm["norm"],
                "language_model.lm_head": llm["lm_head"]}


def vit_shape(timm_id: str, overrides: dict | None, image_size: int) -> VitShape:
    if not overrides and timm_id not in KNOWN_VITS:
        raise ValueError(f"no shape known for timm model '{timm_id}'; expected one of {sorted(KNOWN_VITS)} "
                         "or explicit vision_overrides")
    kwargs = {**VIT_DEFAULTS, **(dict(overrides) if overrides else KNOWN_VITS[timm_id])}
    width, patch = kwargs["embed_dim"], kwargs["patch_size"]
    patches = (image_size // patch) ** 2
    prefix = int(kwargs["class_token"]) + kwargs["reg_tokens"]
    return VitShape(width=width, depth=kwargs["depth"], mlp=int(width * kwargs["mlp_ratio"]), patch=patch,
                    patches=patches, prefix_tokens=prefix,
                    pos_embed_tokens=patches if kwargs["no_embed_class"] else patches + prefix,
                    layer_scale=kwargs["init_values"] is not None, map_head=kwargs["global_pool"] == "map",
                    in_chans=kwargs["in_chans"])


def shape_from_config(config) -> VLAShape:
    """The shapes of a vla.model.VLAConfig (or anything with its four fields); no torch needed."""
    text = {**LLAMA2_7B, **{k: v for k, v in config.text_config.items() if k in LLAMA2_7B and v is not None}}
    overrides = list(config.vision_overrides) or [None, None]
    dino = vit_shape(config.timm_model_ids[0], overrides[0], config.image_size)
    siglip = vit_shape(config.timm_model_ids[1], overrides[1], config.image_size)
    llm = LlamaShape(hidden=text["hidden_size"], intermediate=text["intermediate_size"],
                     layers=text["num_hidden_layers"], heads=text["num_attention_heads"],
                     kv_heads=text["num_key_value_heads"] or text["num_attention_heads"], vocab=text["vocab_size"])
    return VLAShape(dino, siglip, ProjectorShape(dino.width + siglip.width, llm.hidden), llm)


@dataclass(frozen=True)
class OpenVLA7BConfig:
    """VLAConfig()'s fields, spelled out without importing torch (vla/model.py builds from the same)."""

    text_config: dict = field(default_factory=lambda: {"vocab_size": 32064})
    timm_model_ids: tuple = tuple(KNOWN_VITS)
    image_size: int = 224
    vision_overrides: tuple = ()


OPENVLA_7B = shape_from_config(OpenVLA7BConfig())


# --- draft heads --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeadShape:
    """An EagleHead (drafts/eagle_head.py) at the verifier's width: `kind` mamba, llama or history."""

    kind: str
    hidden: int
    mamba_layers: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    llama: LlamaShape | None = None     # the verifier's shapes, for the llama core's one layer

    def mamba_block_parameters(self) -> int:
        d, di, n = self.hidden, self.expand * self.hidden, self.d_state
        rank = math.ceil(d / 16)
        return (d + d * 2 * di + di * self.d_conv + di + di * (rank + 2 * n) + rank * di + di + di * n + di
                + di * d)

    def core_parameters(self) -> int:
        if self.kind == "mamba":
            return self.mamba_layers * self.mamba_block_parameters()
        if self.kind == "llama":
            return self.llama.layer_parameters()
        return 0

    def parameters(self) -> int:
        """fc, core, final RMSNorm (the lm_head and embedding are the verifier's, not the head's)."""
        if self.kind == "history":
            return 0
        return 2 * self.hidden * self.hidden + self.hidden + self.core_parameters() + self.hidden

    def call_cost(self, positions: int, past: int) -> Cost:
        """The head over `positions` inputs after `past` earlier ones, with action logits at the last."""
        if self.kind == "history":
            return Cost()
        d = self.hidden
        head_weights = 2 * d * d + 2 * d + ACTION_ROWS * d               # fc, final norm, the action rows
        head = Cost(2 * positions * 2 * d * d + 2 * ACTION_ROWS * d,
                    (head_weights + positions * d) * BF16_BYTES, KERNELS_PER_HEAD, head_weights)
        if self.kind == "llama":
            layer = self.llama.layer_cost(positions, past)
            return head + Cost(layer.flops, layer.bytes, KERNELS_LLAMA_DRAFT_LAYER, layer.weight_params)
        di, n, rank = self.expand * d, self.d_state, math.ceil(d / 16)
        linear = d * 2 * di + di * (rank + 2 * n) + rank * di + di * d     # in_proj, x_proj, dt_proj, out_proj
        state_bytes = di * self.d_conv * BF16_BYTES + di * n * 4                # conv state (bf16), ssm (fp32)
        block = Cost(2 * positions * linear + positions * di * (2 * self.d_conv + 8 * n),
                     self.mamba_block_parameters() * BF16_BYTES + 2 * state_bytes, KERNELS_PER_MAMBA_BLOCK,
                     self.mamba_block_parameters())
        return head + block.times(self.mamba_layers)

    def step_cost(self, past: int = DEFAULT_DRAFT_CONTEXT) -> Cost:
        """One drafted token."""
        return self.call_cost(1, past)

    def begin_cost(self, context: int = DEFAULT_DRAFT_CONTEXT) -> Cost:
        """`begin`: the head over the last `context` prompt positions."""
        return self.call_cost(context, 0)


def draft_heads(shape: VLAShape = OPENVLA_7B, mamba_layers: int = 1) -> dict:
    return {"mamba": HeadShape("mamba", shape.llm.hidden, mamba_layers=mamba_layers),
            "llama": HeadShape("llama", shape.llm.hidden, llama=shape.llm),
            "history": HeadShape("history", shape.llm.hidden)}


# --- one action -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActionCosts:
    """The costs of every piece of one action for a shape and prompt length."""

    vision: Cost
    projector: Cost
    prefill_lm: Cost
    passes: dict                  # new tokens (1..MAX_PASS_TOKENS) -> Cost of one verifier pass
    draft_steps: dict             # draft kind -> Cost of one step
    draft_begins: dict            # draft kind -> Cost of `begin`
    positions: int                # prefill positions: BOS + patches + prompt tokens after BOS
    llm: LlamaShape | None = None     # for passes of any length (tree passes)
    heads: dict | None = None         # draft kind -> HeadShape, for tree levels
    context: int = DEFAULT_DRAFT_CONTEXT

    @property
    def prefill(self) -> Cost:
        return self.vision + self.projector + self.prefill_lm

    def tree_pass(self, nodes: int) -> Cost:
        """A verifier pass over the pending token and a tree of `nodes` proposals (logits for all)."""
        return self.llm.forward_cost(1 + nodes, self.positions, 1 + nodes, tree=True)

    def prefill_with(self, early: int, tree: bool = False) -> Cost:
        """The prefill verifying `early` guesses too (a chain, or a tree of them)."""
        if not early:
            return self.prefill
        return self.vision + self.projector + self.llm.forward_cost(self.positions + early, 0, 1 + early, tree)

    def tree_draft(self, kind: str, depth: int, top_k: int) -> Cost:
        """A draft's EAGLE-2 tree: one step for the first level, then a batched step of top_k rows
        for each further level (nothing for history)."""
        head = self.heads[kind]
        return head.call_cost(1, self.context) + head.call_cost(top_k, self.context).times(max(0, depth - 1))


def action_costs(shape: VLAShape = OPENVLA_7B, prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
                 mamba_layers: int = 1, context: int = DEFAULT_DRAFT_CONTEXT) -> ActionCosts:
    """`prompt_tokens` counts BOS; the prefill covers BOS, the patches and the rest of the prompt."""
    if prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be >= 1 (BOS included), got {prompt_tokens}")
    positions = prompt_tokens + shape.dino.patches
    heads = draft_heads(shape, mamba_layers)
    return ActionCosts(
        vision=shape.dino.cost() + shape.siglip.cost(),
        projector=shape.projector.cost(shape.dino.patches),
        prefill_lm=shape.llm.forward_cost(positions, 0, 1),
        passes={n: shape.llm.forward_cost(n, positions, n) for n in range(1, MAX_PASS_TOKENS + 1)},
        draft_steps={kind: head.step_cost(context) for kind, head in heads.items()},
        draft_begins={kind: head.begin_cost(context) for kind, head in heads.items()},
        positions=positions, llm=shape.llm, heads=heads, context=context)


def ms(cost: Cost, device: DeviceSpec, mode: str) -> float:
    if mode not in ("roofline", "eager"):
        raise ValueError(f"mode must be 'roofline' or 'eager', got '{mode}'")
    return cost.roofline_ms(device) if mode == "roofline" else cost.eager_ms(device)


def ar_ms(costs: ActionCosts, device: DeviceSpec, mode: str) -> float:
    """Autoregressive: the prefill (which yields the first token), then 6 one-token passes."""
    return ms(costs.prefill, device, mode) + 6 * ms(costs.passes[1], device, mode)


def speculative_ms(costs: ActionCosts, device: DeviceSpec, mode: str, draft: str, passes: float,
                   num_draft_tokens: int) -> float:
    """One action with `passes` verifier passes (prefill included), each later pass over the
    pending token + `num_draft_tokens` proposals; the draft runs `begin`, one step per proposal
    and one `accept` call per pass (re-reading the accepted positions: about one step)."""
    if passes < 1:
        raise ValueError(f"passes per action must be >= 1 (the prefill), got {passes}")
    later = passes - 1
    pass_tokens = min(1 + num_draft_tokens, MAX_PASS_TOKENS)
    draft_calls = later * (num_draft_tokens + 1)
    return (ms(costs.prefill, device, mode) + later * ms(costs.passes[pass_tokens], device, mode)
            + ms(costs.draft_begins[draft], device, mode) + draft_calls * ms(costs.draft_steps[draft], device, mode))


def profile_ms(costs: ActionCosts, device: DeviceSpec, mode: str, draft: str, proposed_per_pass: list[int],
               tree: tuple[int, int] | None = None) -> float:
    """One decoded action as a decoder recorded it (DecodeStats.proposed_per_pass: the prefill's
    early guesses, then the proposals of each later pass) on `device`: the prefill with its guesses,
    a pass over 1 + proposals for each later pass (a tree pass when `tree` = (depth, top_k) of the
    draft's tree shape), and the draft (`draft`: a kind of draft_heads, or 'ar'): `begin`, then per
    later pass one step per proposal and one to accept (a chain), or the tree's levels and one to
    accept. Early guesses are counted as copies (no draft steps), as the packaged heads make them."""
    if not proposed_per_pass:
        raise ValueError("a decoded action has at least its prefill pass")
    early, later = proposed_per_pass[0], proposed_per_pass[1:]
    total = ms(costs.prefill_with(early, tree is not None), device, mode)
    for proposed in later:
        total += ms(costs.tree_pass(proposed) if tree and proposed else costs.llm.forward_cost(
            1 + proposed, costs.positions, 1 + proposed), device, mode)
    if draft in costs.draft_steps:
        total += ms(costs.draft_begins[draft], device, mode)
        step = ms(costs.draft_steps[draft], device, mode)
        for proposed in later:
            if tree and proposed:
                depth, top_k = tree
                total += ms(costs.tree_draft(draft, depth, top_k), device, mode) + step
            else:
                total += (proposed + 1) * step
    return total


# --- report ---------------------------------------------------------------------------------------

def split(costs: ActionCosts, device: DeviceSpec, mode: str) -> dict:
    """Each piece relative to one verifier pass over 1 token."""
    unit = ms(costs.passes[1], device, mode)
    pieces = {"prefill": costs.prefill, "vision": costs.vision,
              **{f"pass_{n}": cost for n, cost in costs.passes.items()}}
    pieces.update({f"{kind}_step": cost for kind, cost in costs.draft_steps.items()})
    return {name: ms(cost, device, mode) / unit for name, cost in pieces.items()}


def measured_split(prefill_ms: float, pass_ms: dict, step_ms: dict) -> dict:
    """A measured split in `split`'s terms: prefill, passes over n tokens and draft steps
    (`step_ms`: kind -> ms) relative to one verifier pass over 1 token (`pass_ms[1]`)."""
    unit = pass_ms[1]
    return {"prefill": prefill_ms / unit, **{f"pass_{n}": value / unit for n, value in pass_ms.items()},
            **{f"{kind}_step": value / unit for kind, value in step_ms.items()}}


def split_comparison(measured: dict, costs: ActionCosts = None, device: DeviceSpec = H200,
                     pass_tokens: int = 5) -> str:
    """Markdown table: a measured split (`measured_split`) beside OpenVLA-7B's computed split on
    `device` (roofline and eager), and measured / roofline per part. Within 2x either way is the
    proportional miniature's target (issue #11); the prefill cannot meet it on a CPU (see README)."""
    costs = costs or action_costs()
    computed = {mode: split(costs, device, mode) for mode in ("roofline", "eager")}
    parts = ["prefill", f"pass_{pass_tokens}", "mamba_step", "llama_step"]
    lines = [f"| part (x one verifier pass of 1 token) | measured here | OpenVLA-7B {device.name} roofline "
             "(computed) | eager (computed) | measured / roofline |", "|---|---|---|---|---|"]
    for part in parts:
        if part not in measured:
            continue
        ratio = measured[part] / computed["roofline"][part]
        lines.append(f"| {part} | {measured[part]:.3f} | {computed['roofline'][part]:.3f} | "
                     f"{computed['eager'][part]:.3f} | {ratio:.2f}x{'' if 0.5 <= ratio <= 2.0 else ' (outside 2x)'} |")
    return "\n".join(lines)


def report(costs: ActionCosts, devices: list[DeviceSpec], passes_list: list[float], num_draft_tokens: int) -> dict:
    out = {"positions": costs.positions, "devices": {}}
    parts = {"vision": costs.vision, "projector": costs.projector, "prefill_lm": costs.prefill_lm,
             "prefill": costs.prefill,
             **{f"pass_{n}": cost for n, cost in costs.passes.items()},
             **{f"{kind}_step": cost for kind, cost in costs.draft_steps.items()},
             **{f"{kind}_begin": cost for kind, cost in costs.draft_begins.items()}}
    out["parts"] = {name: {"gflop": c.flops / 1e9, "gbytes": c.bytes / 1e9, "kernels": c.kernels}
                    for name, c in parts.items()}
    for device in devices:
        entry = {"spec": asdict(device)}
        for mode in ("roofline", "eager"):
            entry[mode] = {
                "ms": {name: ms(cost, device, mode) for name, cost in parts.items()},
                "split": split(costs, device, mode),
                "ar_ms_per_action": ar_ms(costs, device, mode),
                "speculative_ms_per_action": {
                    kind: {str(p): speculative_ms(costs, device, mode, kind, p, num_draft_tokens)
                           for p in passes_list}
                    for kind in costs.draft_steps}}
        out["devices"][device.name] = entry
    return out
