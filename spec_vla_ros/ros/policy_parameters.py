"""The policy node's parameters (DESIGN.md, "ROS interfaces"): name, default, description and
whether it is read-only, defined once. No ROS here, and no model stack (PolicyConfig's defaults
come from spec_vla_ros.policy_config).

The PolicyConfig fields among them have PolicyConfig's defaults; the read-only ones are those a
running policy cannot change (policy_config.RESTART_FIELDS: they select the loaded verifier) and
`threads` (set once, before the model loads).
"""
from __future__ import annotations

from sim_bridge.constants import LIBERO_CONTROL_HZ

from ..decoding.acceptance import RULE_DESCRIPTIONS
from ..decoding.spec import DRAFT_TREE_HELP
from ..drafts.kinds import AR
from ..drafts.kinds import DRAFT_NAMES
from .node_parameters import Parameter, parameter_table
from ..policy_config import RESTART_FIELDS, PolicyConfig
from ..vla.threads import DEFAULT_THREADS, THREADS_HELP

READ_ONLY = (*RESTART_FIELDS, "threads")
_CONFIG = PolicyConfig()


def _parameter(name: str, default, description: str) -> Parameter:
    read_only = name in READ_ONLY
    return Parameter(name, default, description + ("; read-only" if read_only else ""), read_only)


POLICY_PARAMETERS = parameter_table(
    _parameter("verifier", _CONFIG.verifier,
               "'miniature' (embedded toy OpenVLA, solves no task) or an OpenVLA HF directory"),
    _parameter("unnorm_key", _CONFIG.unnorm_key, "dataset statistics key for action de-normalization"),
    _parameter("device", _CONFIG.device, "torch device: cpu or cuda[:N]"),
    _parameter("dtype", _CONFIG.dtype, "auto (the checkpoint's own dtype; the miniature: fp32 on CPU, bf16 on "
                                       "CUDA), float32, bfloat16 or float16"),
    _parameter("compile", _CONFIG.compile, "auto (verifier passes compiled per length and replayed as CUDA graphs "
                                           "on CUDA, warmed up at start; eager on the CPU), always (compiled on "
                                           "any device; on the CPU traced, not faster) or never (eager)"),
    _parameter("draft", _CONFIG.draft, f"draft model: {' | '.join(DRAFT_NAMES)} ({AR}: autoregressive, no draft); "
                                       "a change takes effect at the next action"),
    _parameter("draft_checkpoint", _CONFIG.draft_checkpoint,
               "draft checkpoint directory, or a directory with one per kind (mamba/, llama/); '' = the "
               "packaged ones for the embedded miniature"),
    _parameter("num_draft_tokens", _CONFIG.num_draft_tokens, "tokens the draft proposes per verifier pass (1-7)"),
    _parameter("draft_tree", _CONFIG.draft_tree, DRAFT_TREE_HELP + "; a change takes effect at the next action"),
    _parameter("acceptance", _CONFIG.acceptance,
               "; ".join(f"{name}: {rule}" for name, rule in RULE_DESCRIPTIONS.items())),
    _parameter("relaxed_threshold", _CONFIG.relaxed_threshold,
               "relaxed acceptance: largest |draft id - verifier id| accepted (0 = strict)"),
    _parameter("center_crop", _CONFIG.center_crop,
               "take the centered 0.9-area crop OpenVLA's LIBERO models were trained with"),
    _parameter("control_hz", float(LIBERO_CONTROL_HZ),
               "controller rate; scales per-step deltas to the velocities on servo/delta_twist_cmds"),
    _parameter("stale_image_timeout_sec", 1.0, "frames older than this (by header stamp) are not acted on"),
    _parameter("frame_id", "panda_link0",
               "frame of servo/delta_twist_cmds (LIBERO's deltas are in the robot base frame)"),
    _parameter("dry_run", False, "compute and log actions and statistics, publish no motion (action, twist, "
                                 "gripper)"),
    _parameter("image_transport", "raw",
               "raw: sensor_msgs/Image on camera/image_raw | compressed: sensor_msgs/CompressedImage (jpeg/png) "
               "on camera/image_raw/compressed, as image_transport names it"),
    _parameter("threads", DEFAULT_THREADS, THREADS_HELP + "; set once, before the model loads"),
    _parameter("no_frame_warning_sec", 5.0,
               "warn when the camera topic has a publisher but no frame arrived for this long"),
)
