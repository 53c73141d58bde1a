"""Names of the files in an SAE directory, and the error for a bad one.

A leaf module: the readers and writers of every format import it, and it imports
none of them.
"""

from __future__ import annotations

from ..errors import AtlasError

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
#: What an SAE directory may hold besides ``cfg.json`` and the weights.
SAE_EXTRAS = ("metrics.jsonl", "checkpoint.pt", "tensorboard")


class SAEFileError(AtlasError):
    """An SAE directory is missing, incomplete or inconsistent."""
