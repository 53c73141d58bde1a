"""The figures of ``atlas.json`` that its own lists and the units' table give
(:func:`.atlas_verdict.check_verdict` calls :func:`check_own_figures`): the partition's
``z``, ``p`` and null figures are those of the null ``strictest_null`` names in
``nulls``, and the SAE's own modules (``sae_modules``) are the ones units.parquet's
``sae_module`` names. Edited by hand, each was shown as it stood: "under the strictest
null: z 99" beside "All nulls: ... z 35.6" on the report's Modularity line, and "the SAE's
own 30 reproducible modules" (or "3 significant reproducible modules") in the headline
above units of 3 such modules (and of none counted)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .atlas_format import ATLAS_JSON, AtlasFileError

if TYPE_CHECKING:
    from .atlas import Atlas

#: The partition's figures that are the strictest null's own (``modularity`` is not:
#: older atlases held the cores' modularity there).
_STRICTEST = ("z", "p", "null_mean", "null_std")


def check_own_figures(atlas: Atlas, path: Path, fix: str) -> None:
    """Refuse an ``atlas.json`` whose strictest null's figures, or whose SAE module
    counts, are not the ones its ``nulls`` and units.parquet give."""
    _check_strictest(atlas.summary, path / ATLAS_JSON, fix)
    _check_sae_modules(atlas, path, fix)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check_strictest(s: dict[str, Any], meta: Path, fix: str) -> None:
    name, tests = s.get("strictest_null"), s.get("nulls")
    if name is None or not isinstance(tests, list):
        return
    named = [t for t in tests if isinstance(t, dict) and t.get("null") == name]
    if not named:
        raise AtlasFileError(
            f"`strictest_null` in '{meta}' is {name!r}, not one of the nulls of `nulls` "
            f"({[t.get('null') for t in tests if isinstance(t, dict)]}); {fix}."
        )
    for key in _STRICTEST:
        if key in s and key in named[0] and not _same(s[key], named[0][key]):
            raise AtlasFileError(
                f"`{key}` in '{meta}' is {s[key]!r}, but the strictest null's ({name!r} of "
                f"`nulls`) is {named[0][key]!r}; {fix}."
            )


def _check_sae_modules(atlas: Atlas, path: Path, fix: str) -> None:
    """``sae_modules.n_modules``: the SAE ensemble's modules, which units.parquet's
    ``sae_module`` numbers ``0..n-1``; ``n_units``: the units in its significant ones (none
    without one, at least one with one, and no more than lie in its modules)."""
    own, units = atlas.summary.get("sae_modules"), atlas.units
    if not isinstance(own, dict) or "sae_module" not in units.columns or units.empty:
        return
    col = units["sae_module"]
    if not pd.api.types.is_integer_dtype(col):
        return  # (refused by name)
    meta = path / ATLAS_JSON
    n, sig, held = own.get("n_modules"), own.get("n_significant_modules"), own.get("n_units")
    present = int(col.max()) + 1 if (col >= 0).any() else 0
    if isinstance(n, int) and n != present:
        raise AtlasFileError(
            f"`sae_modules.n_modules` in '{meta}' is {n}, but units.parquet's `sae_module` "
            f"names {present} modules of the SAE; {fix}."
        )
    in_modules = int((col >= 0).sum())
    if isinstance(sig, int) and isinstance(held, int):
        if (sig == 0) != (held == 0) or held > in_modules or held < sig:
            raise AtlasFileError(
                f"`sae_modules.n_units` in '{meta}' is {held}, but the SAE's "
                f"{sig} significant module(s) (`sae_modules.n_significant_modules`) among "
                f"the {in_modules} units of its modules (units.parquet's `sae_module`) "
                f"cannot hold that many; {fix}."
            )
