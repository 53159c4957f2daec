"""The draft kinds' names and their check, without the model stack: command lines (before they
load anything), parameter tables and decode_report read them here.

What each kind needs and how it loads is the table in drafts/registry.py, which asserts that its
kinds are these (it re-exports them).
"""
AR = "ar"                                   # autoregressive decoding: no draft
RETIRED_SPELLINGS = {"none": AR}            # old spelling -> the one to use now
CHECKPOINT_KINDS = ("mamba", "llama")       # EAGLE-style heads: need a checkpoint trained for the verifier
DRAFT_NAMES = (AR, *CHECKPOINT_KINDS, "history")                            # ar, mamba, llama, history
SPECULATIVE_KINDS = tuple(name for name in DRAFT_NAMES if name != AR)      # mamba, llama, history


def check_kind(kind: str) -> None:
    """ValueError for a kind not in DRAFT_NAMES, naming them; a retired spelling ('none') names its
    replacement."""
    if kind in RETIRED_SPELLINGS:
        raise ValueError(f"draft '{kind}' is now spelled '{RETIRED_SPELLINGS[kind]}' (autoregressive decoding)")
    if kind not in DRAFT_NAMES:
        raise ValueError(f"draft '{kind}' is unknown; expected one of {', '.join(DRAFT_NAMES)}")
