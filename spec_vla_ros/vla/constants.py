"""Every OpenVLA / LIBERO constant the package relies on, in one place.

Values follow the released OpenVLA checkpoints (`openvla/openvla-7b-finetuned-libero-*`)
and OpenVLA's LIBERO evaluation harness; see shared/DESIGN.md.
"""
import numpy as np

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

# --- LIBERO evaluation conventions (OpenVLA's harness) ------------------------------------
LIBERO_RENDER_SIZE = 256
LIBERO_GOAL_MAX_STEPS = 300
LIBERO_NUM_STEPS_WAIT = 10
LIBERO_WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
LIBERO_MAX_DELTA_POS_M = 0.05       # OSC_POSE output limits per control step
LIBERO_MAX_DELTA_ROT_RAD = 0.5
LIBERO_CONTROL_HZ = 20
LIBERO_GOAL_SUITE = "libero_goal"   # key in libero's benchmark dict
LIBERO_GOAL_NUM_TASKS = 10
LIBERO_EPISODES_PER_TASK = 50       # fixed initial states per task; a full evaluation runs them all
LIBERO_GOAL_INSTRUCTIONS = (        # the suite's task language, in task-id order
    "open the middle drawer of the cabinet", "put the bowl on the stove", "put the wine bottle on top of the cabinet",
    "open the top drawer and put the bowl inside", "put the bowl on top of the cabinet",
    "push the plate to the front of the stove", "put the cream cheese in the bowl", "turn on the stove",
    "put the bowl on the plate", "put the wine bottle on the rack")

# --- Speculative decoding ------------------------------------------------------------------
GRIPPER_BIN_GAP = 128               # token distance between the open and close gripper bins
DEFAULT_RELAXED_THRESHOLD = 9       # Spec-VLA's relaxed acceptance
# Strict speculative decoding reproduces AR's token wherever the verifier's top-2 logit margin
# exceeds this (float32): passes of other shapes move a logit by at most 1.8e-5 (measured on the
# miniature, CPU, logits of magnitude ~4), so a flip needs a margin below ~4e-5.
STRICT_TIE_TOLERANCE_FP32 = 1e-4
GRIPPER_OPEN_ABOVE = 0.5            # gripper value (OpenVLA's [0, 1]) above which the harness opens (sign of 2x - 1)
NOOP_POSE_NORM = 1e-4               # OpenVLA's no_noops data: |pose delta| below this with an unchanged gripper

# --- Drafts (EAGLE-style heads over the verifier's features) --------------------------------
MAMBA_D_STATE = 16
MAMBA_D_CONV = 4
MAMBA_EXPAND = 2

# --- Published LIBERO-GOAL results (printed next to measured ones; never measured here) ------
# Rates are fractions; None = not reported by the source (hardware included).
PUBLISHED_LIBERO_GOAL_RESULTS = (
    {"source": "OpenVLA (Kim et al. 2024)", "hardware": None, "configuration": "ar",
     "success_rate": 0.792, "success_rate_std": 0.010},
    {"source": "Spec-VLA (EMNLP 2025)", "hardware": None, "configuration": "llama (EAGLE), strict",
     "success_rate": 0.742, "speedup": 1.09, "acceptance_length": 2.04},
    {"source": "Spec-VLA (EMNLP 2025)", "hardware": None, "configuration": "llama (EAGLE), relaxed:9",
     "success_rate": 0.744, "speedup": 1.42, "acceptance_length": 2.94},
    {"source": "independent Spec-VLA rerun", "hardware": "RTX 4090", "configuration": "llama (EAGLE), strict",
     "speedup": 0.91},
    {"source": "independent Spec-VLA rerun", "hardware": "RTX 4090", "configuration": "llama (EAGLE), relaxed",
     "speedup": 1.15},
    {"source": "seed study", "hardware": None, "configuration": "ar",
     "success_rate": 0.69, "mean_episode_s": 23.38, "std_episode_s": 13.01},
    {"source": "seed study", "hardware": None, "configuration": "llama",
     "draft_train_accuracy": 0.9763, "success_rate": 0.71, "mean_episode_s": 22.61},
    {"source": "seed study", "hardware": None, "configuration": "mamba",
     "draft_train_accuracy": 0.9686, "success_rate": 0.71, "mean_episode_s": 23.29},
)
