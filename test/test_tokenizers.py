"""Checkpoint tokenizers: a real OpenVLA directory loads without the trust-remote-code question,
and a sentencepiece-only directory (tokenizer.model) loads too; both give OpenVLA's prompt ids."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spec_vla_ros.vla.checkpoint import CheckpointError, load_checkpoint, load_tokenizer, write_checkpoint
from spec_vla_ros.vla.constants import BOS_TOKEN_ID, EMPTY_TOKEN_ID
from sim_bridge.constants import LIBERO_GOAL_INSTRUCTIONS
from spec_vla_ros.vla.prompt import build_miniature_tokenizer, prompt_token_ids

REPO = Path(__file__).resolve().parents[1]
# What the published openvla/openvla-7b* config.json and tokenizer_config.json say about classes.
OPENVLA_CONFIG = {
    "architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla",
    "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                 "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
}
OPENVLA_TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
    "pad_token": "<PAD>", "legacy": False, "tokenizer_class": "LlamaTokenizer", "processor_class": "PrismaticProcessor",
    "auto_map": {"AutoProcessor": "processing_prismatic.PrismaticProcessor"}, "clean_up_tokenization_spaces": False,
}


def openvla_prompt(instruction):
    """experiments/robot/openvla_utils.py get_vla_action."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


def test_real_openvla_config_loads_the_tokenizer_without_asking(tmp_path):
    """AutoTokenizer would read config.json's auto_map, ask the trust-remote-code question and warn
    about model type `openvla`; the stdin of the loading process is closed and nothing may be said."""
    build_miniature_tokenizer().save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**settings, **OPENVLA_TOKENIZER_CONFIG}))
    (tmp_path / "config.json").write_text(json.dumps(OPENVLA_CONFIG))
    code = ("import json, sys\n"
            "from spec_vla_ros.vla.checkpoint import load_tokenizer\n"
            "from spec_vla_ros.vla.prompt import prompt_token_ids\n"
            "print(json.dumps(prompt_token_ids(load_tokenizer(sys.argv[1]), sys.argv[2])))\n")
    instruction = "Put the bowl on the plate"
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path), instruction], cwd=REPO,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TRANSFORMERS_VERBOSITY": "warning"})
    assert result.returncode == 0, result.stderr
    said = result.stdout.splitlines()[:-1] + result.stderr.splitlines()
    assert not [line for line in said if line.strip()], "\n".join(said)
    expected = build_miniature_tokenizer()(openvla_prompt(instruction)).input_ids
    assert json.loads(result.stdout.splitlines()[-1]) == expected + [EMPTY_TOKEN_ID] * (expected[-1] != EMPTY_TOKEN_ID)


@pytest.fixture(scope="module")
def sentencepiece_model():
    """A Llama-style sentencepiece BPE model (<unk> 0, <s> 1, </s> 2, byte fallback) trained here."""
    import sentencepiece as spm
    lines = [openvla_prompt(i) for i in LIBERO_GOAL_INSTRUCTIONS] + list(LIBERO_GOAL_INSTRUCTIONS)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 20), model_writer=model, vocab_size=400, hard_vocab_limit=False,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, allow_whitespace_only_pieces=True, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    assert [processor.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert processor.get_piece_size() < EMPTY_TOKEN_ID           # 29871 is outside this vocabulary
    return model.getvalue(), processor


@pytest.mark.parametrize("with_openvla_files", [False, True])
def test_sentencepiece_only_checkpoint_gives_openvla_prompt_ids(sentencepiece_model, tmp_path, with_openvla_files):
    model, processor = sentencepiece_model
    (tmp_path / "tokenizer.model").write_bytes(model)
    if with_openvla_files:
        (tmp_path / "config.json").write_text(json.dumps(OPENVLA_CONFIG))
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(OPENVLA_TOKENIZER_CONFIG))
    tokenizer = load_tokenizer(tmp_path)
    for instruction in ("Put the bowl on the plate", "  open the top drawer  ", "Turn on the stove 2x"):
        ids = prompt_token_ids(tokenizer, instruction)
        # OpenVLA: BOS + the sentencepiece encoding of the prompt, then 29871 appended because the
        # prompt's ids do not end with it (this vocabulary has no id 29871; the model's embedding does).
        assert ids == [BOS_TOKEN_ID] + processor.encode(openvla_prompt(instruction)) + [EMPTY_TOKEN_ID], instruction
        assert tokenizer.decode(ids[1:-1]) == openvla_prompt(instruction)


def test_openvla_directory_with_only_tokenizer_model_loads(miniature, sentencepiece_model, tmp_path):
    model, processor = sentencepiece_model
    directory = write_checkpoint(miniature, tmp_path / "openvla")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (directory / name).unlink(missing_ok=True)
    (directory / "tokenizer.model").write_bytes(model)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **OPENVLA_CONFIG}))
    loaded = load_checkpoint(directory)
    instruction = "Open the top drawer and put the bowl inside"
    assert prompt_token_ids(loaded.tokenizer, instruction) == \
        [BOS_TOKEN_ID] + processor.encode(openvla_prompt(instruction)) + [EMPTY_TOKEN_ID]


def test_broken_tokenizer_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="missing tokenizer files"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
