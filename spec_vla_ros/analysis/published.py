"""Published LIBERO-GOAL results, printed next to measured ones in reports; never measured here.

Rates are fractions; None = not reported by the source (hardware included).
"""
PUBLISHED_LIBERO_GOAL_RESULTS = (
    {"source": "OpenVLA (Kim et al. 2024)", "hardware": None, "configuration": "ar",
     "success_rate": 0.792, "success_rate_std": 0.010},
    {"source": "Spec-VLA (EMNLP 2025)", "hardware": None, "configuration": "llama (EAGLE), strict",
     "success_rate": 0.742, "speedup": 1.09, "acceptance_length": 2.04},
    {"source": "Spec-VLA (EMNLP 2025)", "hardware": None, "configuration": "llama (EAGLE), relaxed:9",
     "success_rate": 0.744, "speedup": 1.42, "acceptance_length": 2.94},
    {"source": "independent Spec-VLA rerun", "hardware": "RTX 4090", "configuration": "llama (EAGLE), strict",
     "speedup": 0.91},
    {"source": "independent Spec-VLA rerun", "hardware": "RTX 4090", "configuration": "llama (EAGLE), relaxed",
     "speedup": 1.15},
    {"source": "seed study", "hardware": None, "configuration": "ar",
     "success_rate": 0.69, "mean_episode_s": 23.38, "std_episode_s": 13.01},
    {"source": "seed study", "hardware": None, "configuration": "llama",
     "draft_train_accuracy": 0.9763, "success_rate": 0.71, "mean_episode_s": 22.61},
    {"source": "seed study", "hardware": None, "configuration": "mamba",
     "draft_train_accuracy": 0.9686, "success_rate": 0.71, "mean_episode_s": 23.29},
)
