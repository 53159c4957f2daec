"""Loading within memory: the checkpoint's own dtype, no second copy, corrupt weight files named,
and `spec-vla-write-miniature --as-openvla` (a real-format stand-in)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from spec_vla_ros.commands.write_miniature import main
from spec_vla_ros.drafts.registry import resolve
from spec_vla_ros.policy import PolicyConfig, VLAPolicy, validate_config
from spec_vla_ros.vla.checkpoint import CheckpointError, load_checkpoint, resolve_dtype, write_checkpoint
from spec_vla_ros.vla.verifiers import load_verifier

# Measured in a fresh process: peak RSS during load_checkpoint minus RSS just before it, with
# imports, the tokenizer and the meta model's code paths already warm. The peak is VmHWM, this
# process image's own high-water mark: getrusage's ru_maxrss would include the (larger) pytest
# process's RSS at the fork that started this one.
MEASURE_LOAD_GROWTH = """
import json, sys
from pathlib import Path
import torch
from spec_vla_ros.vla.checkpoint import load_checkpoint, load_tokenizer, vla_config_from_hf
from spec_vla_ros.vla.model import OpenVLA
directory = Path(sys.argv[1])
load_tokenizer(directory)
with torch.device("meta"):
    OpenVLA(vla_config_from_hf(json.loads((directory / "config.json").read_text())))
def status_bytes(field):
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024
before = status_bytes("VmRSS")
verifier = load_checkpoint(directory, "cpu", sys.argv[2])
peak = status_bytes("VmHWM")
print(json.dumps({"growth": peak - before, "dtype": str(verifier.dtype)}))
"""


@pytest.fixture(scope="module")
def bf16_dir(miniature, tmp_path_factory):
    return write_checkpoint(miniature, tmp_path_factory.mktemp("bf16") / "openvla-bf16", dtype=torch.bfloat16)


def weight_bytes(directory):
    return sum(f.stat().st_size for f in directory.glob("model*.safetensors"))


def load_growth(directory, dtype: str) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE_LOAD_GROWTH, str(directory), dtype],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_auto_keeps_the_checkpoints_dtype(miniature, bf16_dir):
    loaded = load_checkpoint(bf16_dir)                         # dtype auto, CPU
    assert loaded.dtype == torch.bfloat16
    original = miniature.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert value.dtype == torch.bfloat16, key
        assert torch.equal(value, original[key].to(torch.bfloat16)), key


def test_explicit_float32_still_converts(miniature, bf16_dir):
    loaded = load_verifier(str(bf16_dir), "cpu", "float32")
    assert loaded.dtype == torch.float32
    original = miniature.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, original[key].to(torch.bfloat16).float()), key


def test_auto_rule():
    assert resolve_dtype("auto", "cpu", torch.bfloat16) == torch.bfloat16
    assert resolve_dtype("auto", "cuda", torch.float32) == torch.float32
    assert resolve_dtype("auto", "cpu", torch.float16) == torch.float32      # CPU half kernels: see resolve_dtype
    assert resolve_dtype("auto", "cuda:0", torch.float16) == torch.float16
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cpu", torch.bfloat16) == torch.float16
    with pytest.raises(ValueError, match="fp8"):
        resolve_dtype("fp8", "cpu")


def test_no_float32_copy_of_a_bf16_checkpoint(bf16_dir):
    """The memory a load adds stays near the file's bytes; asking for float32 (a real second,
    twice-as-large copy) shows the same measurement would catch a conversion."""
    size = weight_bytes(bf16_dir)
    auto = load_growth(bf16_dir, "auto")
    assert auto["dtype"] == "torch.bfloat16"
    assert auto["growth"] < 1.5 * size, f"load added {auto['growth']} bytes for {size} bytes of bf16 weights"
    converted = load_growth(bf16_dir, "float32")
    assert converted["growth"] > 2 * size, converted


def first_shard(directory):
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    return directory / sorted(set(index["weight_map"].values()))[0]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 1 - int.from_bytes(os.urandom(2), "little") % (len(data) // 2)])


def lfs_pointer(path):
    path.write_text("version https://git-lfs.github.com/spec/v1\n"
                    "oid sha256:4d7a2144ab1b1a2e5c9c0f4b2e8e6b2d7f3c1e9a8b7c6d5e4f3a2b1c0d9e8f7a\nsize 4967215360\n")


def garbage(path):
    path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("corrupt, message", [(truncate, "truncated or corrupted"),
                                               (lfs_pointer, "git-lfs pointer.*git lfs pull"),
                                               (garbage, "truncated or corrupted")])
def test_corrupt_weight_file_is_named(bf16_dir, tmp_path, corrupt, message):
    directory = shutil.copytree(bf16_dir, tmp_path / "copy")
    shard = first_shard(directory)
    corrupt(shard)
    for load in (lambda: load_checkpoint(directory),
                 lambda: validate_config(PolicyConfig(verifier=str(directory), draft="history")),
                 lambda: VLAPolicy(PolicyConfig(verifier=str(directory), draft="ar"))):
        with pytest.raises(CheckpointError, match=message) as error:
            load()
        assert str(shard) in str(error.value)
        assert isinstance(error.value, ValueError)          # the policy node's exit 2, one line
        assert "\n" not in str(error.value)


def test_as_openvla_stand_in(miniature, tmp_path):
    directory = tmp_path / "openvla-7b-finetuned-libero-goal"
    main([str(directory), "--as-openvla", "--dtype", "bfloat16"])
    config = json.loads((directory / "config.json").read_text())
    assert "name" not in config.get("spec_vla_ros", {}) and "miniature" not in json.dumps(config)
    assert config["model_type"] == "openvla" and config["architectures"] == ["OpenVLAForActionPrediction"]
    assert config["auto_map"]["AutoModelForVision2Seq"] == "modeling_prismatic.OpenVLAForActionPrediction"
    assert config["torch_dtype"] == "bfloat16" and config["vision_backbone_id"] == "dinosiglip-vit-so-224px"
    loaded = load_verifier(str(directory))
    assert loaded.name == directory.name and loaded.dtype == torch.bfloat16
    original = miniature.model.state_dict()
    assert all(torch.equal(v, original[k].to(torch.bfloat16)) for k, v in loaded.model.state_dict().items())
    with pytest.raises(ValueError, match="needs draft_checkpoint"):           # packaged drafts: miniature only
        resolve("mamba", "", str(directory))
    resolve("history", "", str(directory))
    named = tmp_path / "named"
    main([str(named)])
    assert json.loads((named / "config.json").read_text())["spec_vla_ros"]["name"] == miniature.name
    resolve("mamba", "", str(named))
