"""The figures of ``atlas.json`` that its own lists and the units' table give
(:func:`.atlas_verdict.check_verdict` calls :func:`check_own_figures`): the partition's
``z``, ``p`` and null figures are those of the null ``strictest_null`` names in
``nulls``, and the SAE's own modules (``sae_modules``) are the ones units.parquet's
``sae_module`` names. Edited by hand, each was shown as it stood: "under the strictest
null: z 99" beside "All nulls: ... z 35.6" on the report's Modularity line, and "the SAE's
own 30 reproducible modules" (or "3 significant reproducible modules") in the headline
above units of 3 such modules (and of none counted). The counts of the plain correlations'
views and of the random-SAE control's table are the ones their own figures give."""

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
    _check_views(atlas.summary, path / ATLAS_JSON, fix)
    _check_control(atlas, path / ATLAS_JSON, fix)


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
    counts = isinstance(sig, int) and isinstance(held, int)
    if counts and ((sig == 0) != (held == 0) or not sig <= held <= in_modules):
        where = f"among the {in_modules} units of its modules (units.parquet's `sae_module`)"
        raise AtlasFileError(
            f"`sae_modules.n_units` in '{meta}' is {held}, which the SAE's {sig} significant "
            f"module(s) (`sae_modules.n_significant_modules`) {where} cannot hold; {fix}."
        )


def _check_views(s: dict[str, Any], meta: Path, fix: str) -> None:
    """A correlation view's significant groups (the report's Plain correlations line: "7
    reproducible groups ..., 7 significant against every null (each group's p ...: 0.083,
    0.17, ...)") are those whose ``module_p`` is below ``config.alpha`` where its partition
    beat the nulls (none where it did not), one p per reproducible group."""
    views, config = s.get("cross_check"), s.get("config")
    alpha = config.get("alpha") if isinstance(config, dict) else None
    for name, view in (views if isinstance(views, dict) else {}).items():
        ps, n_rep = view.get("module_p"), view.get("n_reproducible_modules")
        if not isinstance(ps, list) or not all(_number(p) for p in ps):
            continue
        # groups that co-fire only through the mode all units share are no modules and
        # have no p (a fresh analysis with one was refused as edited by hand)
        shared = view.get("n_shared_mode_groups", 0)
        if isinstance(n_rep, int) and isinstance(shared, int) and len(ps) != n_rep - shared:
            raise AtlasFileError(
                f"`cross_check.{name}.module_p` in '{meta}' has {len(ps)} p-value(s), but the "
                f"view has {n_rep - shared} reproducible groups of their own "
                f"(`n_reproducible_modules` less `n_shared_mode_groups`); {fix}."
            )
        said, beat = view.get("n_significant_modules"), view.get("partition_significant")
        if not (_number(alpha) and isinstance(said, int) and isinstance(beat, bool)):
            continue
        want = sum(p is not None and p < alpha for p in ps) if beat else 0
        if said != want:
            raise AtlasFileError(
                f"`cross_check.{name}.n_significant_modules` in '{meta}' is {said}, but its "
                f"`module_p` below `config.alpha` {alpha:g} give {want}"
                + ("" if beat else " (its partition did not beat the nulls)")
                + f"; {fix}."
            )


def _number(value: Any) -> bool:
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_control(atlas: Atlas, meta: Path, fix: str) -> None:
    """The random-SAE control's table: each column's verdict and ``significant`` are the
    ones its count of significant modules gives (a verdict of "modules" was shown beside
    0 of them), and ``control.real``, the trained SAE's column, holds the atlas's own
    figures (the SAE's own modules, or, in atlases before that, the reported ones): 9
    modules were shown there beside the headline's 3."""
    from .inference.control import control_figures

    control = atlas.summary.get("control")
    if not isinstance(control, dict):
        return
    for name, part in (("control", control), ("control.real", control.get("real"))):
        if not isinstance(part, dict) or not isinstance(part.get("n_significant_modules"), int):
            continue
        found = part["n_significant_modules"] > 0
        verdict = part.get("verdict")
        if part.get("significant", found) != found or (
            isinstance(verdict, str) and verdict.startswith("modules") != found
        ):
            raise AtlasFileError(
                f"`{name}` in '{meta}' has the verdict {verdict!r} and `significant` "
                f"{part.get('significant')!r} beside {part['n_significant_modules']} "
                f"significant modules; {fix}."
            )
    real = control.get("real")
    if not isinstance(real, dict):
        return
    keys = ("n_modules", "n_significant_modules", "z", "p")
    made = [control_figures(atlas, own=True), control_figures(atlas)]
    if not any(all(k not in real or real[k] == f[k] for k in keys) for f in made):
        differ = [k for k in keys if k in real and real[k] != made[0][k]]
        raise AtlasFileError(
            f"`control.real` in '{meta}' (the trained SAE's column of the random-SAE "
            f"control) gives { ({k: real[k] for k in differ}) }, but the atlas's own figures "
            f"are { ({k: made[0][k] for k in differ}) }; {fix}."
        )
