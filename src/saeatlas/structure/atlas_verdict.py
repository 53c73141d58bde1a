"""The checks of an Atlas directory's headline against what lies below it
(:func:`.atlas_tables.check_tables` calls :func:`check_verdict`): ``atlas.json``'s
verdict and counts are the ones its tables give, whether a partition beat its null models
is what their p-values say, and the sentence shown above it all is the one the tables
give."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .atlas_format import ATLAS_JSON, AtlasFileError

if TYPE_CHECKING:
    from .atlas import Atlas

#: ``atlas.json``'s verdict and the counts it rests on (set by ``decide``).
_VERDICT_KEYS = (
    "verdict",
    "significant",
    "n_modules",
    "n_significant_modules",
    "n_sae_only_modules",
    "n_causal_modules",
)


def check_verdict(atlas: Atlas, path: Path, fix: str) -> None:
    """Refuse an ``atlas.json`` whose verdict, counts or partition flags are not the ones
    its tables and p-values give (:func:`.inference.outcome.decide`), and set its
    ``message`` (the page's headline) to the one they give."""
    from .atlas import Atlas
    from .inference.outcome import decide

    modules, s = atlas.modules, atlas.summary
    n = len(modules)
    if s.get("n_modules", n) != n:
        raise AtlasFileError(
            f"'{path / ATLAS_JSON}' says n_modules {s['n_modules']!r}, but modules.parquet "
            f"has {n}; {fix}."
        )
    counted = s.get("n_significant_modules", 0)  # an integer (atlas_format)
    if not 0 <= counted <= n:
        raise AtlasFileError(
            f"'{path / ATLAS_JSON}' says n_significant_modules {counted!r}, but modules.parquet "
            f"has {n} modules; {fix}."
        )
    alpha = (s.get("config") or {}).get("alpha") if isinstance(s.get("config"), dict) else None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        _check_partition(s, alpha, path, fix)
        _check_significant(modules, alpha, path, fix)
    if "verdict" not in s or "significant" not in modules.columns and n:
        return
    # an empty table (no columns at all) has no significant module: atlas.json's count of
    # them was read against it without a word
    again = Atlas(atlas.units, atlas.features, modules.copy(), dict(s))
    decide(again)
    differ = [k for k in _VERDICT_KEYS if k in s and s[k] != again.summary[k]]
    if differ:
        wrong = ", ".join(f"{k} {s[k]!r}" for k in differ)
        right = ", ".join(repr(again.summary[k]) for k in differ)
        raise AtlasFileError(
            f"'{path / ATLAS_JSON}' says {wrong}, but its tables give {right}; {fix}."
        )
    # The headline is the tables' own sentence: one edited by hand ("12 reproducible
    # modules ...") was shown above tables of none. It is set, not compared, so that an
    # atlas whose sentence an older saeatlas worded otherwise is still read.
    s["message"] = again.summary["message"]


def _beat(tests: Any, alpha: float) -> bool:
    """Whether every test of ``tests`` (``nulls`` entries) has a p below ``alpha``, as
    :func:`.inference.significance.verdict` decides (none: not significant)."""
    if not isinstance(tests, list) or not tests:
        return False
    ps = [t.get("p") if isinstance(t, dict) else None for t in tests]
    return all(isinstance(p, (int, float)) and not isinstance(p, bool) and p < alpha for p in ps)


def _check_significant(modules: pd.DataFrame, alpha: float, path: Path, fix: str) -> None:
    """A module is ``significant`` only when its ``p`` (the largest over the null models,
    adjusted over the modules) is below ``config.alpha``: one marked so by hand (and
    counted in ``atlas.json``) was named a module above its p of 0.9."""
    if not {"significant", "p"} <= set(modules.columns) or modules.empty:
        return
    p = modules["p"].to_numpy(np.float64, na_value=np.nan)
    wrong = modules["significant"].to_numpy(bool) & ~(p < alpha)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise AtlasFileError(
            f"modules.parquet in '{path}' marks module {int(modules['module'].iloc[i])} "
            f"`significant` with a p of {p[i]:.3g}, not below `config.alpha` {alpha:g} of "
            f"atlas.json; {fix}."
        )


def _check_partition(s: dict[str, Any], alpha: float, path: Path, fix: str) -> None:
    """``sae_partition_significant``: whether the SAE's partition beat every null model
    (each p of ``sae_modules.nulls`` below ``config.alpha``); a correlation view's
    ``partition_significant``: whether its ``tests`` did (its one ``test`` in atlases
    before the no-groups null); ``partition_significant``: whether either did. The verdict reads the last: one edited to true put "co-firing structure"
    above p-values of 0.86. Checked where the atlas records them (older atlases lack
    ``sae_partition_significant``)."""
    if "sae_partition_significant" not in s:
        return
    views = s.get("cross_check") if isinstance(s.get("cross_check"), dict) else {}
    own = s.get("sae_modules") if isinstance(s.get("sae_modules"), dict) else {}
    facts = [
        (
            "sae_partition_significant",
            s["sae_partition_significant"],
            _beat(own.get("nulls", s.get("nulls")), alpha),
        )
    ]
    for name, view in views.items():
        if "test" in view and "partition_significant" in view:
            # every null's test where the atlas records them all (atlases before the
            # no-groups null hold the one against independent units)
            test = view["tests"] if "tests" in view else view["test"]
            given = _beat(test if isinstance(test, list) else [test], alpha) if test else False
            facts.append(
                (f"cross_check.{name}.partition_significant", view["partition_significant"], given)
            )
    if "partition_significant" in s:
        any_beat = s["sae_partition_significant"] is True or any(
            v.get("partition_significant") is True for v in views.values()
        )
        facts.append(("partition_significant", s["partition_significant"], any_beat))
    for name, said, given in facts:
        if said is not None and said != given:
            raise AtlasFileError(
                f"'{path / ATLAS_JSON}' says {name} {said!r}, but its p-values (against "
                f"`config.alpha` {alpha:g}) give {given!r}; {fix}."
            )
