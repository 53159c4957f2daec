"""Draft training by self-distillation: trace collection from verifier rollouts, then training."""
