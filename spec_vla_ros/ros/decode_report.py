"""What the policy node publishes per action on `decode_stats` (and `/diagnostics`), as one typed
value, and its wire format. No ROS here: bag readers and tests use it without rclpy.

Wire format: the key-value string pairs of one diagnostic_msgs/DiagnosticStatus. Strings are sent
as they are (readable in `ros2 topic echo`), every other value as JSON. The keys, in the order
the node writes them:

    verifier, the DecodeStats fields (draft, acceptance, tokens, verifier_passes, accepted_per_pass,
    proposed_per_pass, draft_ms, verify_ms, total_ms, generated, draft_checkpoint, tree_shape,
    judged_per_pass, source_per_pass), acceptance_length, stopped_at_eos, policy_ms,
    image_to_action_ms, action, dry_run, and the node's running counts (COUNTER_KEYS).

For a tree (the node's draft_tree parameter), `tree_shape` names it (`hybrid:50:6:8`; `chain:K`
for chains, '' for autoregressive decoding), `proposed_per_pass` counts its nodes, and
`source_per_pass` says which branch each pass kept (model, history or retrieval; '' when no
proposal was kept).

Reading (`DecodeReport.from_pairs`) is lenient where bags of older versions differ and strict
where a value would be wrong:
- a status without one of REQUIRED_KEYS, or with a value of the wrong type, is malformed
  (`MalformedReport`, a ValueError naming the key);
- a key that older nodes did not write yet is None in the report (DecodeStats' own default for
  `generated` and `draft_checkpoint`), and is listed in `missing`, so that `to_pairs` leaves it
  out again and a reader can tell "not recorded" from "empty";
- `acceptance_length` and `stopped_at_eos` are derived from the DecodeStats fields, so their sent
  values are not read back (they are written again, recomputed);
- a string-typed key (verifier, draft, ...) is taken as sent, even when its text looks like JSON;
- a key this version does not know (written by a newer node) is kept in `unknown`, decoded, and
  written again by `to_pairs`.
The image stamp the node puts in the DiagnosticArray's header is not a key-value, so not here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from ..decoding.stats import DecodeStats
from ..drafts.kinds import AR, RETIRED_SPELLINGS

# The node's running counts since it started, in the order they are sent.
COUNTER_KEYS = ("actions", "frames_received", "frames_dropped", "frames_stale", "inputs_rejected",
                "inference_errors")
# Written for readers of the topic, recomputed from the DecodeStats fields when read back.
DERIVED_KEYS = ("acceptance_length", "stopped_at_eos")
# DecodeStats.draft of autoregressive decoding (no draft): 'ar', and 'none' in bags recorded
# before the draft kinds were renamed.
AUTOREGRESSIVE_DRAFTS = (AR, *RETIRED_SPELLINGS)
# In every decode_stats status since the first bags; without one of them a status is malformed.
REQUIRED_KEYS = ("draft", "acceptance", "tokens", "verifier_passes", "accepted_per_pass", "proposed_per_pass",
                 "draft_ms", "verify_ms", "total_ms")

_TYPE_NAMES = {"str": str, "int": int, "float": float, "bool": bool, "list": list}
# Expected JSON type of each DecodeStats key (from its annotation: str, int, float or list).
STATS_TYPES = {f.name: _TYPE_NAMES[f.type] for f in fields(DecodeStats)}
# Expected type of each key the node adds; None (absent) is allowed for all of them.
NODE_TYPES = {"verifier": str, "policy_ms": float, "image_to_action_ms": float, "action": list, "dry_run": bool,
              **{key: int for key in COUNTER_KEYS}}


class MalformedReport(ValueError):
    """A decode_stats status that lacks a required key or has a value of the wrong type."""


@dataclass
class DecodeReport:
    """One action's decode statistics as the policy node publishes them.

    `stats`: the decoder's DecodeStats (times in ms). The node's fields are None when the status
    did not carry them (bags recorded before they existed); the node always sets every one.
    """
    stats: DecodeStats
    verifier: str | None = None              # 'miniature' or the OpenVLA directory the policy serves
    policy_ms: float | None = None           # VLAPolicy.act: image preprocessing + decode, ms
    image_to_action_ms: float | None = None  # source image stamp -> action published, ms
    action: list | None = None               # the 7 action values, LIBERO controller convention
    dry_run: bool | None = None              # true: the action was computed, not published
    actions: int | None = None               # actions published (or, in a dry run, computed) so far
    frames_received: int | None = None
    frames_dropped: int | None = None        # replaced by a newer frame before use
    frames_stale: int | None = None          # older than stale_image_timeout_sec
    inputs_rejected: int | None = None
    inference_errors: int | None = None
    missing: frozenset = frozenset()         # keys of this format the status did not carry
    unknown: dict = field(default_factory=dict)   # keys this version does not know -> decoded value

    @property
    def autoregressive(self) -> bool:
        """Decoded without a draft (whichever spelling the recording node used)."""
        return self.stats.draft in AUTOREGRESSIVE_DRAFTS

    def values(self) -> dict:
        """The key -> value mapping that goes on the wire, in wire order, before encoding. A key
        in `missing` or a node field that is None is left out (it was not recorded)."""
        node = {key: getattr(self, key) for key in NODE_TYPES}
        ordered = {"verifier": node.pop("verifier"), **self.stats.as_dict(), **node, **self.unknown}
        return {key: value for key, value in ordered.items() if value is not None and key not in self.missing}

    def to_pairs(self) -> list[tuple[str, str]]:
        """(key, value) string pairs for DiagnosticStatus.values: strings as they are, everything
        else JSON."""
        return [(key, value if isinstance(value, str) else json.dumps(value)) for key, value in self.values().items()]

    @classmethod
    def from_pairs(cls, pairs) -> "DecodeReport":
        """The report in (key, value) string pairs (e.g. `(kv.key, kv.value) for kv in
        status.values`). A string-typed key is taken as it is; any other value is read as JSON, and
        one that is not JSON stays the string it is.

        Raises MalformedReport (a ValueError) naming the first missing required key(s) or the key
        whose value has the wrong type."""
        values = {key: _decode_value(key, text) for key, text in pairs}
        absent = [key for key in REQUIRED_KEYS if key not in values]
        if absent:
            raise MalformedReport(f"missing {', '.join(absent)}")
        for key, kind in {**STATS_TYPES, **NODE_TYPES}.items():
            if key in values and not has_json_type(values[key], kind):
                raise MalformedReport(f"{key} is {values[key]!r}, expected {kind.__name__}")
        known = set(STATS_TYPES) | set(NODE_TYPES) | set(DERIVED_KEYS)
        return cls(
            stats=DecodeStats(**{key: values[key] for key in STATS_TYPES if key in values}),
            **{key: values.get(key) for key in NODE_TYPES},
            missing=frozenset(key for key in [*STATS_TYPES, *DERIVED_KEYS, *NODE_TYPES] if key not in values),
            unknown={key: value for key, value in values.items() if key not in known})


def _decode_value(key: str, text: str):
    """A string key's text as it is (a directory named '123' stays a string); otherwise JSON, or
    the text itself where it is not JSON (a key this version does not know)."""
    if STATS_TYPES.get(key, NODE_TYPES.get(key)) is str:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def has_json_type(value, kind: type) -> bool:
    """JSON's view: an int is a valid float; a bool is neither an int nor a float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
