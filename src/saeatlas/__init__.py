"""saeatlas: the macroscopic structure of neural networks, found with sparse autoencoders."""

__version__ = "0.1.0"
