"""Training sparse autoencoders on activation stores."""

from .config import TrainConfig
from .family import train_family
from .trainer import TrainResult, train_sae

__all__ = ["TrainConfig", "TrainResult", "train_family", "train_sae"]
