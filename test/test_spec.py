"""DecoderSpec: the one parser of `KIND[:RULE[:THRESHOLD]]`, its inverse, and its refusals."""
import pytest

from spec_vla_ros.decoding.acceptance import STRICT, Acceptance
from spec_vla_ros.decoding.spec import DecoderSpec, check_num_draft_tokens, parse_acceptance
from spec_vla_ros.drafts.eagle_head import HEAD_KINDS
from spec_vla_ros.drafts.registry import CHECKPOINT_KINDS, DRAFT_KINDS, DRAFT_NAMES, SPECULATIVE_KINDS
from spec_vla_ros.drafts.kinds import AR


@pytest.mark.parametrize("text, draft, acceptance, name", [
    ("ar", "ar", STRICT, "ar"),
    (" AR ", "ar", STRICT, "ar"),
    ("mamba", "mamba", STRICT, "mamba"),
    ("mamba:strict", "mamba", STRICT, "mamba"),
    ("mamba:relaxed", "mamba", Acceptance(9), "mamba:relaxed:9"),
    ("mamba:relaxed:9", "mamba", Acceptance(9), "mamba:relaxed:9"),
    ("mamba:relaxed:0", "mamba", STRICT, "mamba"),                       # threshold 0 is strict
    ("llama:relaxed-guarded", "llama", Acceptance(9, guarded=True), "llama:relaxed-guarded:9"),
    ("history:relaxed-guarded:3", "history", Acceptance(3, guarded=True), "history:relaxed-guarded:3"),
])
def test_parse_and_name_are_inverses(text, draft, acceptance, name):
    spec = DecoderSpec.parse(text)
    assert (spec.draft, spec.acceptance, spec.name) == (draft, acceptance, name)
    assert DecoderSpec.parse(spec.name) == spec
    assert spec.speculative == (draft != AR)


def test_parse_takes_the_kinds_checkpoint_and_num_draft_tokens():
    checkpoints = {"mamba": "/drafts/mamba", "llama": "/drafts/llama"}
    assert DecoderSpec.parse("mamba:relaxed", checkpoints, 3) == DecoderSpec("mamba", "/drafts/mamba", 3, Acceptance(9))
    assert DecoderSpec.parse("history", checkpoints).draft_checkpoint == ""
    assert DecoderSpec.parse("mamba:relaxed:9") != DecoderSpec.parse("mamba:relaxed-guarded:9")


@pytest.mark.parametrize("text, message", [
    ("none", "configuration 'none': draft 'none' is now spelled 'ar' (autoregressive decoding)"),
    ("none:relaxed", "configuration 'none:relaxed': draft 'none' is now spelled 'ar' (autoregressive decoding)"),
    ("eagle", "configuration 'eagle': draft 'eagle' is unknown; expected one of ar, mamba, llama, history"),
    ("", "configuration '': draft '' is unknown; expected one of ar, mamba, llama, history"),
    ("ar:relaxed", "configuration 'ar:relaxed': 'ar' has no acceptance rule"),
    ("mamba:loose", "configuration 'mamba:loose': acceptance 'loose' is unknown; expected one of strict, "
                    "relaxed, relaxed-guarded"),
    ("mamba:strict:3", "configuration 'mamba:strict:3': acceptance 'strict:3': only relaxed and relaxed-guarded "
                       "take a threshold"),
    ("mamba:relaxed:-1", "configuration 'mamba:relaxed:-1': acceptance 'relaxed:-1': the relaxed threshold must "
                         "be an integer >= 0"),
    ("mamba:relaxed:9:1", "the relaxed threshold must be an integer >= 0"),
])
def test_bad_texts_are_refused_in_one_line(text, message):
    with pytest.raises(ValueError) as raised:
        DecoderSpec.parse(text)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("value", [0, 8, -1, True, 2.0, "4", None])
def test_num_draft_tokens_is_checked_in_one_place(value):
    with pytest.raises(ValueError, match=rf"^num_draft_tokens {value!r}: expected an integer in 1\.\.7$"):
        DecoderSpec("mamba", num_draft_tokens=value)
    with pytest.raises(ValueError, match=rf"^--num-draft-tokens {value!r}: expected an integer in 1\.\.7$"):
        check_num_draft_tokens(value, "--num-draft-tokens")


def test_the_constructor_refuses_what_the_parser_refuses():
    with pytest.raises(ValueError, match="^draft 'none' is now spelled 'ar'"):
        DecoderSpec("none")
    with pytest.raises(ValueError, match="^draft 'gpt' is unknown"):
        DecoderSpec("gpt")
    with pytest.raises(ValueError, match="expected an Acceptance"):
        DecoderSpec("mamba", acceptance="strict")
    for k in range(1, 8):
        assert DecoderSpec("history", num_draft_tokens=k).num_draft_tokens == k


def test_acceptance_alone_parses_as_in_the_configuration_syntax():
    assert parse_acceptance("relaxed") == Acceptance(9)
    assert parse_acceptance("Relaxed-Guarded:4") == Acceptance(4, guarded=True)
    assert parse_acceptance("strict") == STRICT
    with pytest.raises(ValueError, match="acceptance 'loose' is unknown"):
        parse_acceptance("loose")


def test_the_kinds_table_is_the_one_list():
    assert DRAFT_NAMES == tuple(DRAFT_KINDS) == ("ar", "mamba", "llama", "history")
    assert SPECULATIVE_KINDS == ("mamba", "llama", "history")
    assert CHECKPOINT_KINDS == HEAD_KINDS            # the heads drafts/eagle_head.py can build


# --- tree shapes (issue #24) ----------------------------------------------------------------------

from spec_vla_ros.decoding.spec import DEFAULT_TREE_DEPTH, DEFAULT_TREE_TOP_K, parse_tree_shape  # noqa: E402
from spec_vla_ros.drafts.tree import TreeShape  # noqa: E402


@pytest.mark.parametrize("text, shape", [
    ("", None), ("chain", None), (" Chain ", None),
    ("chain:3", TreeShape(3, 3, 1)),
    ("tree:50", TreeShape(50, DEFAULT_TREE_DEPTH, DEFAULT_TREE_TOP_K)),
    ("tree:4", TreeShape(4, 4, DEFAULT_TREE_TOP_K)),             # depth never above the nodes
    ("tree:50:4", TreeShape(50, 4, DEFAULT_TREE_TOP_K)),
    ("tree:50:4:8", TreeShape(50, 4, 8)),
    ("hybrid:32:6:4", TreeShape(32, 6, 4, hybrid=True)),
    ("hybrid:8:3:1", TreeShape(8, 3, 1, hybrid=True)),            # a hybrid of top-k 1 is still a tree
])
def test_tree_shapes_parse(text, shape):
    assert parse_tree_shape(text) == shape
    if shape is not None:
        assert parse_tree_shape(shape.name) == shape


@pytest.mark.parametrize("text, message", [
    ("bush:4", "tree shape 'bush:4': expected chain, chain:K, tree:NODES[:DEPTH[:TOP_K]]"),
    ("tree", "tree shape 'tree': expected chain"),
    ("tree:x", "tree shape 'tree:x': expected chain"),
    ("tree:5:4:3:2", "tree shape 'tree:5:4:3:2': expected chain"),
    ("chain:2:1", "tree shape 'chain:2:1': expected chain"),
    ("chain:9", "tree shape 'chain:9': chain length 9: expected an integer in 1..7"),
    ("tree:0", "tree shape 'tree:0': tree nodes 0: expected an integer in 1..256"),
    ("tree:300", "tree nodes 300: expected an integer in 1..256"),
    ("tree:5:7", "tree shape 'tree:5:7': tree depth 7 needs at least as many nodes, got 5"),
    ("tree:50:8", "tree depth 8: expected an integer in 1..7"),
    ("tree:50:4:0", "tree top_k 0: expected an integer in 1..256"),
    ("tree:6:4:1", "a tree of top_k 1 is a chain: nodes (6) must equal depth (4)"),
])
def test_bad_tree_shapes_are_refused_in_one_line(text, message):
    with pytest.raises(ValueError) as raised:
        parse_tree_shape(text)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("text, tree, name", [
    ("mamba@tree:50", TreeShape(50, DEFAULT_TREE_DEPTH, DEFAULT_TREE_TOP_K), "mamba@tree:50:6:8"),
    ("llama:relaxed:9@hybrid:16:4:4", TreeShape(16, 4, 4, hybrid=True), "llama:relaxed:9@hybrid:16:4:4"),
    ("history@tree:8:3:2", TreeShape(8, 3, 2), "history@tree:8:3:2"),
])
def test_a_configuration_names_its_tree_after_an_at(text, tree, name):
    spec = DecoderSpec.parse(text)
    assert spec.tree == tree and spec.shape == tree and spec.name == name and DecoderSpec.parse(name) == spec


def test_a_chain_shape_is_num_draft_tokens():
    assert DecoderSpec.parse("mamba@chain:3") == DecoderSpec("mamba", num_draft_tokens=3)
    assert DecoderSpec("mamba", tree=TreeShape.chain(5)) == DecoderSpec("mamba", num_draft_tokens=5)
    assert DecoderSpec("mamba", num_draft_tokens=2).shape == TreeShape.chain(2)
    assert DecoderSpec.parse("mamba", tree=TreeShape(16, 4, 8)).tree == TreeShape(16, 4, 8)
    with pytest.raises(ValueError, match="configuration 'mamba@': '@' needs a tree shape"):
        DecoderSpec.parse("mamba@")
    with pytest.raises(ValueError, match="'ar' has no acceptance rule and no tree shape"):
        DecoderSpec.parse("ar@tree:8")
    with pytest.raises(ValueError, match="expected a TreeShape"):
        DecoderSpec("mamba", tree="tree:8")
