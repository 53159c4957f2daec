"""Decoders over a VerifierSession: autoregressive baseline and speculative decoding."""
