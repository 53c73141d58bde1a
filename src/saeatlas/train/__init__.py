"""Training sparse autoencoders on activation stores."""

from .config import TrainConfig
from .ensemble import EnsembleResult, seed_sae_dir, train_ensemble
from .family import train_family
from .trainer import TrainResult, train_sae

__all__ = [
    "EnsembleResult",
    "TrainConfig",
    "TrainResult",
    "seed_sae_dir",
    "train_ensemble",
    "train_family",
    "train_sae",
]
