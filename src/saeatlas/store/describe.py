"""What ``saeatlas info`` says of a store (:class:`StoreSummary`), and what a directory
that is no store is instead (:func:`what_it_is`), for the reader's refusal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import MANIFEST, LayerSpec


@dataclass(frozen=True)
class StoreSummary:
    """What ``saeatlas info`` prints."""

    path: str
    kind: str
    n_rows: int
    n_units: int
    dtype: str
    n_shards: int
    n_bytes: int
    layers: tuple[LayerSpec, ...]
    n_nonfinite_rows_skipped: int
    provenance: dict[str, Any]


def what_it_is(path: Path) -> str:
    """A hint for a directory that is not a store: another saeatlas output (by the file
    each writes; the store does not import the stages), or one array."""
    if (path / "run.json").is_file() and (path / "store" / MANIFEST).is_file():
        return f" It is a run directory (saeatlas run); its store is '{path / 'store'}'."
    if (path / "atlas.json").is_file():
        return (
            " It is an atlas (saeatlas analyze): `saeatlas report` shows it; the store is "
            "the one its analysis read (--acts)."
        )
    if (path / "cfg.json").is_file():
        return " It is an SAE directory (saeatlas train): pass it as --sae, its store as --acts."
    arrays = sorted(path.glob("*.npy"))
    return f" To read the array it holds, pass '{arrays[0]}' itself." if len(arrays) == 1 else ""


def model_name(provenance: dict[str, Any]) -> str | None:
    """The captured model's name in a store's provenance (a TransformerLens model's
    ``model_name``, else ``model``), or None where it records none as text: a list or a
    dict (a manifest edited by hand, a caller's ``provenance``) was exported as its repr."""
    for key in ("model_name", "model"):
        value = provenance.get(key)
        if isinstance(value, str) and value:
            return value
    return None
