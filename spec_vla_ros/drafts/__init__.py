"""Draft models for speculative decoding, selected by name through `registry`."""
