"""Names of the files in an SAE directory, and the error for a bad one.

A leaf module: the readers and writers of every format import it, and it imports
none of them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AtlasError

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
#: The file that marks a sweep's folder (:mod:`saeatlas.sweep`).
SWEEP_JSON = "sweep.json"
#: The weights file of a sparsify SAE (:mod:`.sparsify_format`).
SPARSIFY_WEIGHTS = "sae.safetensors"
#: What an SAE directory may hold besides ``cfg.json`` and the weights.
SAE_EXTRAS = ("metrics.jsonl", "checkpoint.pt", "tensorboard")


class SAEFileError(AtlasError):
    """An SAE directory is missing, incomplete or inconsistent."""


def sae_folder_hint(path: Path) -> str:
    """Where the SAE is, for a ``path`` that is no SAE directory: a sentence naming the
    folder of an SAE's file (``SAE/cfg.json`` given for ``SAE``), or the SAE directories
    a folder holds (what `export-saelens` writes for a joint SAE, one per layer, and how
    SAELens releases lay out their hooks); else ``""``."""
    if path.is_file() and path.name in (CFG, WEIGHTS, SPARSIFY_WEIGHTS):
        return f" It is a file of an SAE directory: give its folder ('{path.parent}')."
    try:
        inner = sorted(
            p.name for p in path.iterdir() if (p / CFG).is_file() and (p / WEIGHTS).is_file()
        )
        sparsify = [p for p in (path, *path.iterdir()) if (p / SPARSIFY_WEIGHTS).is_file()]
    except OSError:  # not a folder, or one that cannot be listed
        return ""
    if (path / CFG).is_file() and (path / WEIGHTS).is_file():  # given to import-sparsify
        return (
            f" It is an SAE directory of saeatlas or SAELens ({WEIGHTS}): use it as it is "
            "(--sae), or convert a SAELens one with `saeatlas import-saelens`."
        )
    sweep = _sweep_hint(path)  # was told to train one, or that its seeds were its layers
    if sweep:
        return sweep
    if sparsify and not inner:  # `import-saelens` of one was told it lacks SAELens's files
        return (
            f" It is {'a sparsify SAE' if sparsify[0] == path else 'a sparsify run'} "
            f"({SPARSIFY_WEIGHTS}): convert it with `saeatlas import-sparsify`."
        )
    if not inner:
        return ""
    names = ", ".join(repr(n) for n in inner[:5]) + (" ..." if len(inner) > 5 else "")
    return (
        f" It is a folder of {len(inner)} SAE directories ({names}), one per layer or hook: "
        f"give one of them ('{path / inner[0]}')."
    )


def _sweep_hint(path: Path) -> str:
    """For a sweep (``SWEEP/sweep.json``) or one of its members (``SWEEP/k-8``, an SAE per
    seed) given where one SAE goes: a sentence naming an SAE of it; else ``""``."""
    if (path / SWEEP_JSON).is_file():
        members = sorted(
            p.parent for p in path.glob(f"*/*/{CFG}") if (p.parent / WEIGHTS).is_file()
        )
        example = f", such as '{members[0]}'" if members else ""
        return (
            f" It is a sweep ({SWEEP_JSON}): give the SAE directory of one of its members"
            f"{example} (its table in {SWEEP_JSON} recommends one)."
        )
    if (path.parent / SWEEP_JSON).is_file():
        seeds = sorted(
            p.name for p in path.iterdir() if (p / CFG).is_file() and (p / WEIGHTS).is_file()
        )
        if seeds:
            return (
                f" It is a member of the sweep '{path.parent}', one SAE per seed ({', '.join(seeds)}): "
                f"give one of them ('{path / seeds[0]}')."
            )
    return ""
