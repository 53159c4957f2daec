"""OpenVLA-compatible verifier: constants, tokenization, preprocessing, model, checkpoints, session."""
