"""Training sparse autoencoders on activation stores."""

from .config import TrainConfig
from .trainer import TrainResult, train_sae

__all__ = ["TrainConfig", "TrainResult", "train_sae"]
