"""What the report reads from the atlas's store: the model's name and the shapes of
per-head layers, which its manifest holds. The report needs only the atlas directory,
so a store that is not there, or is no longer the atlas's, leaves them out and says why."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..capture.layouts import unit_label
from ..errors import AtlasError
from ..store import ActivationStore
from ..structure.atlas import Atlas
from ..structure.fingerprints import same_store
from .sae_facts import not_there


@dataclass(frozen=True)
class StoreFacts:
    model: str | None
    """The model's name: ``model`` of atlas.json when recorded, else the store's provenance."""
    shapes: dict[str, tuple[tuple[Any, ...], str]]
    """Per layer, its shape and layout as the store's manifest records them."""
    unread: str | None
    """Why the store's manifest was not read (a clause), None when it was or none is named."""


def store_facts(summary: dict[str, Any]) -> StoreFacts:
    """The facts of the store ``summary`` (atlas.json) names, read only when the store at
    that path is still the one the atlas was made from (``store_fingerprint``): a store
    captured again there from another model gave the atlas that model's name."""
    recorded = str(summary["model"]) if summary.get("model") else None
    store = summary.get("store")
    if not store:
        return StoreFacts(recorded, {}, None)
    path = Path(str(store))
    if not path.exists():
        why = not_there("the atlas's store", path, ", whose manifest names it,")
        return StoreFacts(recorded, {}, why)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        provenance = manifest.get("provenance", {})
        model = provenance.get("model") if isinstance(provenance, dict) else None
        shapes = {
            layer["name"]: (tuple(layer.get("shape", ())), layer.get("layout", ""))
            for layer in manifest.get("layers", [])
        }
    # RecursionError: a manifest nested past Python's stack ended the report in a traceback
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return StoreFacts(recorded, {}, None)  # names by index only; the report needs no store
    made_from = summary.get("store_fingerprint")
    if made_from is not None:
        # read as the analysis read it: without the NaN/Inf rows it left out
        skip = "skip" if summary.get("store_skipped_rows") else "error"
        try:
            opened = ActivationStore.open(path, verify=False, on_nonfinite=skip)
            same = same_store(summary, opened)
        except (AtlasError, OSError, ValueError):
            same = False
        if not same:
            why = (
                f"the store at '{path}' is not the one the atlas was made from (its rows "
                "differ: captured again since the analysis), so its manifest is not read"
            )
            return StoreFacts(recorded, {}, why)
    return StoreFacts(recorded or (str(model) if model else None), shapes, None)


def unit_names(atlas: Atlas, shapes: dict[str, tuple[tuple[Any, ...], str]]) -> list[str]:
    """``layer:index`` per unit; ``layer:head.dim`` for per-head layers (attention heads),
    whose layout and shape the store's manifest records (``shapes``)."""
    names = []
    for layer, index in zip(atlas.units["layer"], atlas.units["index"]):
        shape, layout = shapes.get(layer, ((), ""))
        names.append(f"{layer}:{unit_label(shape, layout, int(index))}")
    return names
