"""Verifier checkpoints: reading and writing OpenVLA directories (HF format).

An OpenVLA directory holds `config.json`, `model.safetensors` or sharded `model-*.safetensors`
with `model.safetensors.index.json`, `dataset_statistics.json`, `preprocessor_config.json` (the
image normalization) and tokenizer files (`tokenizer.json`, or only sentencepiece's
`tokenizer.model`). Loading is strict: every key of the checkpoint is used, every key of the
model is filled, every shape matches; otherwise the error names the keys. Weights load in the
checkpoint's own dtype unless another is asked for (resolve_dtype), file by file into a model
built on the meta device, without a second copy (assign_weights); a truncated, corrupted or
git-lfs-pointer weight file raises CheckpointError naming the file. Nothing is loaded
through transformers' Auto classes, so the custom classes a real `config.json` names in its
`auto_map` are never consulted and no trust-remote-code question is asked. The embedded
miniature (vla/miniature.py) is written in this same format and read back through the same loader.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import LlamaTokenizer, PreTrainedTokenizerFast
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from .constants import PAD_TOKEN_ID, PADDED_VOCAB_SIZE
from .model import OpenVLA, VLAConfig
from .preprocess import (OPENVLA_NORMALIZATION, ImageNormalization, normalization_from_preprocessor_config,
                         openvla_preprocessor_config)

WEIGHTS_INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
STATISTICS = "dataset_statistics.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
FAST_TOKENIZER, SENTENCEPIECE_TOKENIZER = "tokenizer.json", "tokenizer.model"
TOKENIZER_FILES = (FAST_TOKENIZER, SENTENCEPIECE_TOKENIZER)
TOKENIZER_CONFIG = "tokenizer_config.json"


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded as it is; the message says why."""


@dataclass
class LoadedVerifier:
    model: OpenVLA
    tokenizer: object
    norm_stats: dict          # {unnorm_key: {"action": {"q01", "q99", "mask"}}}
    name: str                 # "miniature-seed0" or the checkpoint directory's name
    # pass to preprocess.pixel_values: the checkpoint's preprocessor_config.json values
    image_normalization: ImageNormalization = OPENVLA_NORMALIZATION

    @property
    def device(self) -> torch.device:
        return self.model.projector.fc1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.projector.fc1.weight.dtype


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device: str, stored: torch.dtype | None = None) -> torch.dtype:
    """The dtype to run in. `auto` is the checkpoint's own dtype (`stored`), so nothing is
    converted and a 15 GB bf16 OpenVLA stays 15 GB; except fp16 on the CPU, which becomes fp32
    (PyTorch's CPU half-precision kernels are partial and slow, and fp32 holds every fp16 value
    exactly, where bf16 would round them). Without a stored dtype (the embedded miniature, built
    in fp32; a draft head): fp32 on CPU, bf16 on CUDA. Raises ValueError for an unknown name."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not supported; expected auto or one of {sorted(DTYPES)}")
    if dtype != "auto":
        return DTYPES[dtype]
    on_cuda = str(device).startswith("cuda")
    if stored is None:
        return torch.bfloat16 if on_cuda else torch.float32
    if stored == torch.float16 and not on_cuda:
        return torch.float32
    return stored


# --- writing ---------------------------------------------------------------------------------

# What the released OpenVLA checkpoints' config.json holds besides the architecture (OpenVLAConfig
# and PrismaticConfig in openvla's prismatic/extern/hf/configuration_prismatic.py; the
# LIBERO fine-tunes were saved by transformers 4.40.1).
OPENVLA_CONFIG_FIELDS = {
    "architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla",
    "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                 "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
    "vision_backbone_id": "dinosiglip-vit-so-224px", "llm_backbone_id": "llama2-7b-pure",
    "hf_llm_id": "meta-llama/Llama-2-7b-hf", "arch_specifier": "no-align+fused-gelu-mlp",
    "use_fused_vision_backbone": True, "timm_override_act_layers": [None, None],
    "image_resize_strategy": "resize-naive", "llm_max_length": 2048, "n_action_bins": 256,
    "output_projector_states": False, "pad_to_multiple_of": 64, "pad_token_id": PAD_TOKEN_ID,
    "transformers_version": "4.40.1",
}


def openvla_hf_config(config: VLAConfig, norm_stats: dict, dtype: torch.dtype) -> dict:
    """config.json in the released checkpoints' layout for `config` (OPENVLA_CONFIG_FIELDS,
    timm ids, image sizes, text_config, norm_stats, torch_dtype); nothing of this package's own."""
    dtype_name = str(dtype).removeprefix("torch.")
    return {**OPENVLA_CONFIG_FIELDS, "timm_model_ids": list(config.timm_model_ids),
            "image_sizes": [config.image_size, config.image_size],
            "text_config": {"model_type": "llama", **config.text_config, "torch_dtype": dtype_name},
            "norm_stats": norm_stats, "torch_dtype": dtype_name}


def write_checkpoint(verifier: LoadedVerifier, directory: Path, max_shard_size: str = "20MB",
                     dtype: torch.dtype | None = None, as_openvla: bool = False) -> Path:
    """Write `verifier` as an OpenVLA HF directory (config.json, sharded safetensors + index,
    stats, image preprocessor config, tokenizer), its weights in `dtype` (default: as they are).

    config.json has the released checkpoints' fields; the `spec_vla_ros` entry adds the
    miniature's vision sizes and its name. With `as_openvla` the name is left out: the directory
    is then a stand-in for a real checkpoint (named after the directory, packaged drafts refused),
    still loadable because the vision sizes stay."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = verifier.model.config
    state_dict = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in verifier.model.state_dict().items()}
    hf_config = openvla_hf_config(config, verifier.norm_stats, dtype or verifier.dtype)
    ours = {"vision_overrides": list(config.vision_overrides)} if config.vision_overrides else {}
    if not as_openvla:
        ours["name"] = verifier.name
    if ours:
        hf_config["spec_vla_ros"] = ours
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    (directory / STATISTICS).write_text(json.dumps(verifier.norm_stats, indent=2))
    (directory / PREPROCESSOR_CONFIG).write_text(
        json.dumps(openvla_preprocessor_config(verifier.image_normalization), indent=2))
    split = split_torch_state_dict_into_shards(state_dict, max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: state_dict[k] for k in keys}, directory / filename, metadata={"format": "pt"})
    if split.is_sharded:
        write_index(directory, split.tensor_to_filename, state_dict.values())
    verifier.tokenizer.save_pretrained(directory)
    return directory


def write_index(directory: Path, tensor_to_filename: dict, tensors) -> None:
    """model.safetensors.index.json: total bytes and which shard holds each key."""
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors)},
             "weight_map": dict(tensor_to_filename)}
    (directory / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))


# --- loading ---------------------------------------------------------------------------------

def vla_config_from_hf(hf_config: dict) -> VLAConfig:
    text_config = {k: v for k, v in hf_config.get("text_config", {}).items() if k not in ("model_type", "torch_dtype")}
    text_config.setdefault("vocab_size", PADDED_VOCAB_SIZE)
    text_config.setdefault("pad_token_id", PAD_TOKEN_ID)
    ours = hf_config.get("spec_vla_ros", {})
    return VLAConfig(text_config=text_config, timm_model_ids=tuple(hf_config["timm_model_ids"]),
                     image_size=int(hf_config.get("image_sizes", [224])[0]),
                     vision_overrides=tuple(ours.get("vision_overrides", ())))


def weight_files(directory: Path) -> list[Path]:
    index = directory / WEIGHTS_INDEX
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [directory / name for name in names]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{directory}: {WEIGHTS_INDEX} names weight files that are missing: {missing}")
        return files
    if (directory / SINGLE_WEIGHTS).exists():
        return [directory / SINGLE_WEIGHTS]
    raise CheckpointError(f"{directory}: no weights found; expected {WEIGHTS_INDEX} with its shards or {SINGLE_WEIGHTS}")


def check_checkpoint_files(directory: Path) -> None:
    """Cheap check of everything a checkpoint directory needs (files present, weight files'
    headers readable: no weights read), raising CheckpointError naming what is missing or broken."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"verifier checkpoint directory '{directory}' does not exist")
    if not (directory / "config.json").exists():
        raise CheckpointError(f"{directory}: missing config.json")
    read_headers(weight_files(directory))
    if not any((directory / name).exists() for name in TOKENIZER_FILES):
        raise CheckpointError(f"{directory}: missing tokenizer files (expected one of {list(TOKENIZER_FILES)})")


LFS_POINTER_PREFIX = b"version https://git-lfs"
SAFETENSORS_FLOAT_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as a weight file's header describes it (nothing read yet)."""
    path: Path
    shape: tuple
    dtype: str                # safetensors' name: "BF16", "F32", ...


def unreadable(path: Path, error) -> CheckpointError:
    """The CheckpointError for a weight file safetensors cannot read, saying what to do."""
    try:
        with open(path, "rb") as f:
            start = f.read(len(LFS_POINTER_PREFIX))
    except OSError:
        start = b""
    if start == LFS_POINTER_PREFIX:
        return CheckpointError(f"{path}: is a git-lfs pointer, not the weights; fetch them with `git lfs pull` in "
                               f"{path.parent} (or download the checkpoint again with `huggingface-cli download`)")
    return CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupted ({error}); "
                           "download this file again")


def read_headers(files: list[Path]) -> dict:
    """{key: StoredTensor} from the weight files' headers, reading no tensor data. Raises
    CheckpointError naming the file for one that is unreadable, truncated or a git-lfs pointer,
    and for a key stored twice."""
    stored = {}
    for path in files:
        try:
            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    if key in stored:
                        raise CheckpointError(f"{path.name}: key '{key}' appears in more than one weight file")
                    view = f.get_slice(key)
                    stored[key] = StoredTensor(path, tuple(view.get_shape()), view.get_dtype())
        except (SafetensorError, OSError) as error:
            raise unreadable(path, error) from None
    return stored


def stored_dtype(stored: dict) -> torch.dtype | None:
    """The floating dtype holding most of the checkpoint's bytes (what `auto` keeps), from the
    headers: they, not config.json's `torch_dtype`, say what is actually on disk."""
    totals = {}
    for tensor in stored.values():
        dtype = SAFETENSORS_FLOAT_DTYPES.get(tensor.dtype)
        if dtype is not None:
            totals[dtype] = totals.get(dtype, 0) + math.prod(tensor.shape) * dtype.itemsize
    return max(totals, key=totals.get) if totals else None


def assign_weights(model: OpenVLA, stored: dict, device: str, dtype: torch.dtype) -> None:
    """Fill the meta-built `model` weight file by weight file. Each tensor is read once (on the
    CPU with pread, into this process's own memory, so the first action pays no disk reads; on
    CUDA straight onto the device), converted only when `dtype` differs from the stored one
    (the stored tensor is dropped at once), and assigned (assign=True: the model's parameter is
    that tensor, no copy). Peak memory: the model plus one tensor in two dtypes."""
    backend = {"backend": "pread"} if str(device) == "cpu" else {}
    for path in dict.fromkeys(tensor.path for tensor in stored.values()):
        try:
            with safe_open(path, framework="pt", device=str(device), **backend) as f:
                shard = {key: in_dtype(f.get_tensor(key), dtype) for key in f.keys()}
        except (SafetensorError, OSError) as error:
            raise unreadable(path, error) from None
        model.load_state_dict(shard, strict=False, assign=True)
        del shard


def in_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating tensors converted to `dtype` when they differ; others as they are."""
    return tensor.to(dtype) if tensor.is_floating_point() and tensor.dtype != dtype else tensor


def describe_keys(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")


def check_architecture(model: OpenVLA, stored: dict, source: Path) -> None:
    """Every key of the checkpoint used, every key of the model filled, every shape equal, or
    CheckpointError naming the keys (from the headers: before any weight is read)."""
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(stored), set(stored) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {describe_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {describe_keys(unexpected)}")
    mis_shaped = [f"{k} (checkpoint {stored[k].shape}, model {tuple(expected[k].shape)})"
                  for k in sorted(set(expected) & set(stored)) if stored[k].shape != tuple(expected[k].shape)]
    if mis_shaped:
        problems.append(f"mis-shaped keys: {', '.join(mis_shaped[:8])}")
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match the OpenVLA architecture: " + "; ".join(problems))


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:             # a dotted name whose parent package is missing
        return False


def load_tokenizer(directory: Path):
    """The checkpoint's Llama-2 tokenizer, built by class, never through `AutoTokenizer`.

    `AutoTokenizer` first loads `config.json` with `AutoConfig`, and a real OpenVLA config names
    custom classes (`auto_map`, model_type `openvla`): it would ask whether to run remote code
    and warn about the model type. Here `tokenizer.json` is loaded as it is (what OpenVLA's
    `LlamaTokenizerFast` did), with `tokenizer_config.json` / `special_tokens_map.json`; a
    directory with only sentencepiece's `tokenizer.model` is converted by transformers'
    `LlamaTokenizer` (needs the sentencepiece and protobuf packages). Raises CheckpointError.
    """
    directory = Path(directory)
    if (directory / FAST_TOKENIZER).exists():
        try:
            return PreTrainedTokenizerFast.from_pretrained(directory)
        except Exception as error:              # the tokenizers library raises plain Exception
            raise CheckpointError(f"{directory / FAST_TOKENIZER}: cannot be loaded ({error})") from None
    if not (directory / SENTENCEPIECE_TOKENIZER).exists():
        raise CheckpointError(f"{directory}: missing tokenizer files (expected one of {list(TOKENIZER_FILES)})")
    missing = [name for name in ("sentencepiece", "google.protobuf") if not is_installed(name)]
    if missing:
        raise CheckpointError(f"{directory}: only {SENTENCEPIECE_TOKENIZER} is present, and reading it needs the "
                              f"packages {missing} (pip install sentencepiece protobuf)")
    settings_file = directory / TOKENIZER_CONFIG
    try:
        settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
        # Llama-2 adds BOS (transformers 4's LlamaTokenizer default, which OpenVLA ran with);
        # transformers 5 adds it only when told, so say so unless tokenizer_config.json decides.
        return LlamaTokenizer.from_pretrained(directory, add_bos_token=settings.get("add_bos_token", True))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{settings_file}: not valid JSON ({error})") from None
    except (ImportError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{directory}: {SENTENCEPIECE_TOKENIZER} is not a sentencepiece model: {error}") from None


def load_image_normalization(directory: Path) -> ImageNormalization:
    """DINOv2 / SigLIP normalization from the checkpoint's `preprocessor_config.json`.

    Without the file, the published OpenVLA-7B checkpoints' values: the published fine-tunes
    carry exactly those, and OpenVLA's fine-tuning scripts save the processor they loaded, so a
    directory without the file is most likely one of them with the file left out (OpenVLA's own
    `AutoProcessor` cannot load such a directory at all). The exact ImageNet values would be
    what no published OpenVLA evaluation used. `source` says which was taken. Raises
    CheckpointError for a file that is not valid JSON or not in OpenVLA's layout.
    """
    path = Path(directory) / PREPROCESSOR_CONFIG
    if not path.exists():
        return ImageNormalization(OPENVLA_NORMALIZATION.mean, OPENVLA_NORMALIZATION.std,
                                  f"default: no {PREPROCESSOR_CONFIG} (OpenVLA-7B checkpoints' values)")
    try:
        return normalization_from_preprocessor_config(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def load_checkpoint(directory, device: str = "cpu", dtype: str = "auto") -> LoadedVerifier:
    """Load an OpenVLA HF directory strictly onto `device`, in the checkpoint's own dtype unless
    `dtype` says otherwise (see resolve_dtype), without materializing a random model first and
    without a second copy of the weights. Raises CheckpointError naming the file or keys."""
    directory = Path(directory)
    check_checkpoint_files(directory)
    hf_config = json.loads((directory / "config.json").read_text())
    tokenizer, image_normalization = load_tokenizer(directory), load_image_normalization(directory)   # cheap first
    stored = read_headers(weight_files(directory))
    torch_dtype = resolve_dtype(dtype, device, stored_dtype(stored))
    config = vla_config_from_hf(hf_config)
    with torch.device("meta"):
        model = OpenVLA(config)
    check_architecture(model, stored, directory)
    assign_weights(model, stored, device, torch_dtype)
    # Non-persistent buffers (rotary frequencies) are not in checkpoints: rebuild them for real.
    model.language_model.model.rotary_emb = LlamaRotaryEmbedding(model.language_model.config).to(device)
    model.eval()
    norm_stats = hf_config.get("norm_stats")
    if (directory / STATISTICS).exists():
        norm_stats = json.loads((directory / STATISTICS).read_text())
    if not norm_stats:
        raise CheckpointError(f"{directory}: missing {STATISTICS} (and config.json has no 'norm_stats')")
    name = hf_config.get("spec_vla_ros", {}).get("name", directory.name)
    return LoadedVerifier(model, tokenizer, norm_stats, name, image_normalization)
