"""OpenVLA-7B facts the package relies on: action tokenization, prompt, images, de-normalization.

Values follow the released OpenVLA checkpoints (`openvla/openvla-7b-finetuned-libero-*`)
and OpenVLA's LIBERO evaluation harness; see shared/DESIGN.md.
"""
import numpy as np

# --- The embedded miniature verifier (built by vla/miniature.py) ---------------------------
MINIATURE = "miniature"             # what --verifier / the `verifier` parameter call it
MINIATURE_SEED = 0
MINIATURE_NAME = f"{MINIATURE}-seed{MINIATURE_SEED}"   # the verifier name the packaged drafts are trained for

# --- Action tokenization -------------------------------------------------------------
ACTION_DIM = 7                      # dx dy dz droll dpitch dyaw gripper
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
N_BINS = 256                        # bin *edges*; 255 bin centers
TOKENIZER_VOCAB_SIZE = 32000        # Llama-2 tokenizer; action ids count down from here
PADDED_VOCAB_SIZE = 32064           # OpenVLA pads the embedding / lm_head to a multiple of 64
ACTION_TOKEN_MIN = TOKENIZER_VOCAB_SIZE - N_BINS   # 31744 (digitize can return 256 for a = 1.0)
ACTION_TOKEN_MAX = TOKENIZER_VOCAB_SIZE - 1        # 31999
BIN_EDGES = np.linspace(-1.0, 1.0, N_BINS)
BIN_CENTERS = (BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2.0

# --- Prompt ----------------------------------------------------------------------------
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
EMPTY_TOKEN_ID = 29871              # Llama-2's lone "▁"; OpenVLA appends it after "Out:"
BOS_TOKEN_ID = 1
EOS_TOKEN_ID = 2
PAD_TOKEN_ID = 32000
MAX_INSTRUCTION_CHARS = 1000        # far beyond any LIBERO instruction; guards the prompt length

# --- Images ----------------------------------------------------------------------------
IMAGE_SIZE = 224
PATCH_SIZE = 14
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2      # 256 projected patch embeddings
CENTER_CROP_AREA = 0.9
JPEG_QUALITY = 95                   # tf.image.encode_jpeg's default; the harness JPEG-encodes every frame
DINO_MEAN = (0.485, 0.456, 0.406)   # ImageNet statistics (DINOv2 featurizer; timm's data config, OpenVLA training)
DINO_STD = (0.229, 0.224, 0.225)
# What the published OpenVLA-7B checkpoints' preprocessor_config.json (tvf_normalize_params) hold,
# and so what OpenVLA's harness applies: the ImageNet values above rounded to bfloat16.
OPENVLA_DINO_MEAN = (0.484375, 0.455078125, 0.40625)
OPENVLA_DINO_STD = (0.228515625, 0.2236328125, 0.224609375)
SIGLIP_MEAN = (0.5, 0.5, 0.5)       # SigLIP (fused featurizer)
SIGLIP_STD = (0.5, 0.5, 0.5)
DINO_TIMM_NAME = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_TIMM_NAME = "vit_so400m_patch14_siglip_224"

# --- Action de-normalization (LIBERO-GOAL statistics published with OpenVLA) ------------
DEFAULT_UNNORM_KEY = "libero_goal"
FALLBACK_UNNORM_KEYS = ("libero_goal_no_noops",)
LIBERO_GOAL_Q01 = (-0.8785714507102966, -0.7553571462631226, -0.9375, -0.1510714292526245,
                   -0.1639285683631897, -0.13777500048279764, 0.0)
LIBERO_GOAL_Q99 = (0.9375, 0.9107142686843872, 0.9375, 0.20357142388820648,
                   0.26357144117355347, 0.375, 1.0)
LIBERO_GOAL_MASK = (True, True, True, True, True, True, False)

# The `compile` setting (vla/compiled_passes.py): auto = verifier passes compiled (CUDA graphs) on CUDA
# and eager on the CPU; always = compiled on any device (on the CPU: traced, not faster); never = eager.
# Not on/off: YAML 1.1 (parameter files, launch arguments) reads those as booleans.
COMPILE_MODES = ("auto", "always", "never")
