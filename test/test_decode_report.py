"""The decode_stats wire format (spec_vla_ros.ros.decode_report): what the policy node encodes reads
back as the same report; bags of older nodes (keys missing) and of newer ones (keys unknown) read;
malformed statuses are refused with the key at fault. No ROS needed."""
import json
import re
from dataclasses import fields

import pytest

from spec_vla_ros.ros.decode_report import AUTOREGRESSIVE_DRAFTS, COUNTER_KEYS, DecodeReport, MalformedReport
from spec_vla_ros.decoding.stats import DecodeStats

# The keys a policy node of this version writes, in order (the wire format `ros2 topic echo` shows).
WIRE_KEYS = ["verifier", "draft", "acceptance", "tokens", "verifier_passes", "accepted_per_pass", "proposed_per_pass",
             "draft_ms", "verify_ms", "total_ms", "generated", "draft_checkpoint", "tree_shape", "judged_per_pass",
             "source_per_pass", "acceptance_length",
             "stopped_at_eos", "policy_ms", "image_to_action_ms", "action", "dry_run", "actions", "frames_received",
             "frames_dropped", "frames_stale", "inputs_rejected", "inference_errors"]


def full_report() -> DecodeReport:
    stats = DecodeStats("mamba", "relaxed:9", tokens=[31900 + i for i in range(7)], verifier_passes=3,
                        accepted_per_pass=[2, 3, 0], proposed_per_pass=[4, 4, 1], draft_ms=1.5, verify_ms=30.25,
                        total_ms=31.75, generated=[31900 + i for i in range(7)], draft_checkpoint="/drafts/mamba")
    return DecodeReport(stats, verifier="/models/openvla-7b", policy_ms=35.0, image_to_action_ms=40.5,
                        action=[0.1, -0.2, 0.0, 0.0, 0.05, 0.0, 1.0], dry_run=False,
                        **{key: index for index, key in enumerate(COUNTER_KEYS)})


def test_encode_then_decode_gives_the_same_report_and_the_same_pairs():
    report = full_report()
    pairs = report.to_pairs()
    assert [key for key, _ in pairs] == WIRE_KEYS
    assert all(isinstance(value, str) for _, value in pairs)
    text = dict(pairs)
    assert text["verifier"] == "/models/openvla-7b" and text["draft"] == "mamba"      # strings as they are
    assert json.loads(text["tokens"]) == report.stats.tokens and text["dry_run"] == "false"
    assert json.loads(text["acceptance_length"]) == pytest.approx(7 / 3)
    decoded = DecodeReport.from_pairs(pairs)
    assert decoded == report and decoded.missing == frozenset() and decoded.unknown == {}
    assert decoded.to_pairs() == pairs


def test_the_wire_format_is_the_one_existing_bags_hold():
    """What the node sent before the report existed: verifier, DecodeStats.as_dict(), the node's
    timings, action, dry_run and counts; strings as they are, everything else JSON."""
    report = full_report()
    legacy = {"verifier": report.verifier, **report.stats.as_dict(), "policy_ms": report.policy_ms,
              "image_to_action_ms": report.image_to_action_ms, "action": report.action, "dry_run": report.dry_run,
              **{key: getattr(report, key) for key in COUNTER_KEYS}}
    assert report.to_pairs() == [(key, value if isinstance(value, str) else json.dumps(value))
                                 for key, value in legacy.items()]


def test_autoregressive_decoding_is_told_apart_in_either_spelling():
    from spec_vla_ros.drafts.kinds import AR
    assert AR in AUTOREGRESSIVE_DRAFTS and "none" in AUTOREGRESSIVE_DRAFTS      # 'none': older bags
    assert DecodeReport(DecodeStats(AR, "strict")).autoregressive
    assert DecodeReport(DecodeStats("none", "strict")).autoregressive
    assert not DecodeReport(DecodeStats("history", "strict")).autoregressive


def test_every_decode_stats_field_is_on_the_wire():
    """A field added to DecodeStats travels without a change here."""
    assert {f.name for f in fields(DecodeStats)} <= set(WIRE_KEYS)
    assert {f.name for f in fields(DecodeReport)} - {"stats", "missing", "unknown"} <= set(WIRE_KEYS)


def test_a_status_of_an_older_node_decodes_with_clear_defaults():
    """The first bags: no verifier, generated, draft_checkpoint, node timings or counts."""
    stats = DecodeStats("history", "strict", [31900] * 7, 7, [0] * 7, [0] * 7, 0.1, 70.0, 70.1)
    old_keys = ("draft", "acceptance", "tokens", "verifier_passes", "accepted_per_pass", "proposed_per_pass",
                "draft_ms", "verify_ms", "total_ms", "acceptance_length")
    pairs = [(key, value) for key, value in DecodeReport(stats).to_pairs() if key in old_keys]
    report = DecodeReport.from_pairs(pairs)
    assert report.stats == stats and report.stats.generated == [] and report.stats.draft_checkpoint == ""
    assert report.verifier is None and report.policy_ms is None and report.frames_dropped is None
    assert {"generated", "draft_checkpoint", "verifier", "policy_ms", "actions"} <= report.missing
    assert report.to_pairs() == pairs           # written back as it was: nothing invented


def test_unknown_keys_are_kept_and_strings_stay_strings():
    pairs = full_report().to_pairs() + [("gpu_ms", "12.5"), ("note", "warm cache"), ("tags", '["a"]')]
    report = DecodeReport.from_pairs(pairs)
    assert report.unknown == {"gpu_ms": 12.5, "note": "warm cache", "tags": ["a"]}     # not JSON: stays a string
    assert report.to_pairs() == pairs
    # A string field whose text looks like JSON is still the string it was sent as.
    numeric = dict(full_report().to_pairs(), verifier="123", draft_checkpoint="null")
    report = DecodeReport.from_pairs(numeric.items())
    assert report.verifier == "123" and report.stats.draft_checkpoint == "null"


@pytest.mark.parametrize("change, message", [
    ({"draft": None}, "missing draft"),
    ({"verifier_passes": '"three"'}, "verifier_passes is 'three', expected int"),
    ({"verifier_passes": "true"}, "verifier_passes is True, expected int"),
    ({"total_ms": "[1]"}, "total_ms is [1], expected float"),
    ({"frames_dropped": "1.5"}, "frames_dropped is 1.5, expected int"),
])
def test_a_malformed_status_is_refused_naming_the_key(change, message):
    values = dict(full_report().to_pairs())
    for key, text in change.items():
        if text is None:
            del values[key]
        else:
            values[key] = text
    with pytest.raises(MalformedReport, match=re.escape(message)):
        DecodeReport.from_pairs(values.items())
    assert issubclass(MalformedReport, ValueError)
