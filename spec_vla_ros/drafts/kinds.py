"""How autoregressive decoding is spelled, without the model stack (decode_report reads it).

The table of draft kinds itself is drafts/registry.py.
"""
AR = "ar"                                   # autoregressive decoding: no draft
RETIRED_SPELLINGS = {"none": AR}            # old spelling -> the one to use now
