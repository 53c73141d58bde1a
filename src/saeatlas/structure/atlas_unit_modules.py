"""The module columns of an Atlas directory's units.parquet other than ``module``
(:mod:`.atlas_tables` checks that one): ``submodule``, ``sae_module``,
``consensus_module`` and ``cross_check_module`` name modules that ``atlas.json`` counts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .atlas_format import AtlasFileError

if TYPE_CHECKING:
    from .atlas import Atlas


def check_unit_modules(atlas: Atlas, path: Path, fix: str) -> None:
    """A unit's ``submodule`` is one of the sub-module scale's reproducible modules that
    ``atlas.json``'s ``ensemble.levels`` counts (``cross_check.raw.levels`` where the
    modules are the units' correlations; -1: none); its ``sae_module``, ``consensus_module``
    and ``cross_check_module`` are modules that ``atlas.json`` counts too (they were read
    as they stood: a unit of SAE module 50 of 0)."""
    units = atlas.units
    if units.empty:
        return
    s = atlas.summary
    view = s.get("ensemble")
    cross = s.get("cross_check")
    raw = cross.get("raw") if isinstance(cross, dict) else None
    levels = raw.get("levels") if isinstance(raw, dict) else None
    marked = isinstance(levels, list) and any(
        isinstance(lv, dict) and "submodules" in lv for lv in levels
    )
    if s.get("modules_from") == "unit_correlations" and marked:
        view = raw  # (atlases before the mark took the SAE ensemble's sub-modules)
    own = s.get("sae_modules")
    counts = {
        "submodule": (
            _n_submodules(view),
            "reproducible modules of the sub-module scale that atlas.json's `levels` count",
        ),
        "sae_module": (
            own.get("n_modules") if isinstance(own, dict) else None,
            "modules of the SAE ensemble that atlas.json's `sae_modules.n_modules` counts",
        ),
        "consensus_module": (
            _chosen(s.get("ensemble"), "n_consensus_modules"),
            "consensus modules of the reported scale that atlas.json's `ensemble.levels` count",
        ),
        "cross_check_module": (
            raw.get("n_reproducible_modules") if isinstance(raw, dict) else None,
            "reproducible modules of the correlations that atlas.json's `cross_check.raw` counts",
        ),
    }
    for column, (count, what) in counts.items():
        if column not in units.columns:
            continue
        col = units[column]
        integers = pd.api.types.is_integer_dtype(col)
        top = count if isinstance(count, int) else (int(col.max()) + 1 if integers else 0)
        if not integers or not col.isin(range(-1, max(top, 0))).all():
            bad = col[~col.isin(range(-1, max(top, 0)))]
            value = bad.iloc[0] if len(bad) else col.iloc[0]
            value = value.item() if isinstance(value, np.generic) else value
            raise AtlasFileError(
                f"`{column}` of units.parquet in '{path}' names {value!r}, not one of the "
                f"{top} {what} (or -1, none); {fix}."
            )


def _chosen(view: Any, key: str) -> int | None:
    """``key`` of the scale that ``view``'s ``levels`` mark ``chosen`` (None: not said)."""
    levels = view.get("levels") if isinstance(view, dict) else None
    chosen = [lv for lv in levels or () if isinstance(lv, dict) and lv.get("chosen") is True]
    value = chosen[0].get(key) if len(chosen) == 1 else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _n_submodules(ensemble: Any) -> int | None:
    """The number of reproducible modules at the sub-module scale (the level marked
    ``submodules``; in atlases written before that mark, the one after the chosen
    scale), 0 when there is none, or None when ``ensemble.levels`` does not say."""
    levels = ensemble.get("levels") if isinstance(ensemble, dict) else None
    if not isinstance(levels, list) or not all(isinstance(lv, dict) for lv in levels):
        return None
    chosen = [i for i, lv in enumerate(levels) if lv.get("chosen") is True]
    if len(chosen) != 1:
        return None
    if any("submodules" in lv for lv in levels):
        marked = [i for i, lv in enumerate(levels) if lv.get("submodules") is True]
        if len(marked) > 1:
            return None
        finer = marked[0] if marked else None
    else:
        finer = chosen[0] + 1 if chosen[0] + 1 < len(levels) else None
    if finer is None:
        return 0
    n = levels[finer].get("n_reproducible_modules")
    return n if isinstance(n, int) and not isinstance(n, bool) else None
