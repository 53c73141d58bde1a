"""Sparse autoencoders: ReLU, TopK, BatchTopK and JumpReLU, per layer or joint."""

from .config import ARCHITECTURES, SAEConfig
from .files import SAEFileError
from .model import ForwardOutput, LatentOutput, SparseAutoencoder

__all__ = [
    "ARCHITECTURES",
    "ForwardOutput",
    "LatentOutput",
    "SAEConfig",
    "SAEFileError",
    "SparseAutoencoder",
]
