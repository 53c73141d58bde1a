"""Names of the files in an SAE directory, and the error for a bad one.

A leaf module: the readers and writers of every format import it, and it imports
none of them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AtlasError

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
#: What an SAE directory may hold besides ``cfg.json`` and the weights.
SAE_EXTRAS = ("metrics.jsonl", "checkpoint.pt", "tensorboard")


class SAEFileError(AtlasError):
    """An SAE directory is missing, incomplete or inconsistent."""


def inner_saes_hint(path: Path) -> str:
    """For a folder without ``cfg.json`` that holds SAE directories (what `export-saelens`
    writes for a joint SAE, one per layer, and how SAELens releases lay out their hooks):
    a sentence naming them and how to give one; else ``""``."""
    try:
        inner = sorted(
            p.name for p in path.iterdir() if (p / CFG).is_file() and (p / WEIGHTS).is_file()
        )
    except OSError:  # not a folder, or one that cannot be listed
        return ""
    if not inner:
        return ""
    names = ", ".join(repr(n) for n in inner[:5]) + (" ..." if len(inner) > 5 else "")
    return (
        f" It is a folder of {len(inner)} SAE directories ({names}), one per layer or hook: "
        f"give one of them ('{path / inner[0]}')."
    )
