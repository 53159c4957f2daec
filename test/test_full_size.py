"""`spec-vla-bench full-size`'s parts on a tiny architecture: the released layout written shard by
shard, read back equal through the normal loader, and the benchmark's path (load, prefill, AR and
history-draft actions). The full-size run itself is a benchmark (README: "Full-size proof")."""
import json
import os
from argparse import Namespace

import torch
from safetensors.torch import load_file

from spec_vla_ros.benchmarks.full_size import write_random_openvla
from spec_vla_ros.commands.benchmarks.full_size import run
from spec_vla_ros.vla.checkpoint import OPENVLA_CONFIG_FIELDS
from spec_vla_ros.vla.miniature import miniature_config
from spec_vla_ros.vla.verifiers import load_verifier


def test_random_openvla_in_the_released_layout_reads_back_equal(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    directory = write_random_openvla(tmp_path / "tiny", miniature_config(), max_shard_size="10MB", seed=seed)
    config = json.loads((directory / "config.json").read_text())
    assert {k: config[k] for k in OPENVLA_CONFIG_FIELDS} == OPENVLA_CONFIG_FIELDS
    assert config["torch_dtype"] == config["text_config"]["torch_dtype"] == "bfloat16"
    assert set(config.get("spec_vla_ros", {})) == {"vision_overrides"}     # the tiny ViTs' sizes, no name
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    written, largest = {}, 0
    for name in shards:
        shard = load_file(directory / name)
        assert sum(t.numel() * t.element_size() for t in shard.values()) <= 10e6 or len(shard) == 1, name
        largest = max(largest, (directory / name).stat().st_size)
        written.update(shard)
    assert len(shards) > 2 and largest > 5e6
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in written.values())
    for name in ("dataset_statistics.json", "preprocessor_config.json", "tokenizer.json"):
        assert (directory / name).is_file(), name
    loaded = load_verifier(str(directory))
    assert loaded.dtype == torch.bfloat16 and loaded.name == "tiny"
    state = loaded.model.state_dict()
    assert state.keys() == written.keys()
    assert all(torch.equal(state[key], value) for key, value in written.items()), seed
    assert written["projector.fc1.bias"].abs().sum() == 0 and float(written["projector.fc1.weight"].float().std()) > 0


def test_benchmark_path_on_a_written_directory(tmp_path, capsys):
    directory = write_random_openvla(tmp_path / "tiny", miniature_config(), max_shard_size="10MB")
    threads = torch.get_num_threads()             # unchanged: other tests' float results depend on it
    result = run(Namespace(directory=directory, keep=False, threads=threads, dtype="auto", seed=0))
    assert directory.exists()                               # not written by this run: left in place
    assert result["shards"] > 2 and result["load_peak_rss_bytes"] > 0 and result["prefill_ms"] > 0
    assert result["speculative_passes"][1] <= 2 and result["equal_to_ar"]   # same frame: history's guess is AR's
    assert "peak RSS" in capsys.readouterr().out
