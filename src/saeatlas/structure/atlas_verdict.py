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
from .atlas_own_figures import check_own_figures

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
    _check_members(s, path / ATLAS_JSON, fix)
    _check_own_counts(s, path / ATLAS_JSON, fix)
    check_own_figures(atlas, path, fix)
    _check_sweep_lists(s, path / ATLAS_JSON, fix)
    _check_graph_counts(atlas, path / ATLAS_JSON, fix)
    _check_ablation_draws(atlas, path, fix)
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
    else:
        alpha = None
    _check_module_p(modules, alpha, path, fix)
    if n and counted and "significant" not in modules.columns:
        # every module was shown as not significant under a headline that counts some
        raise AtlasFileError(
            f"'{path / ATLAS_JSON}' counts {counted} significant module(s), but modules.parquet "
            f"has no `significant` column to say which; {fix}."
        )
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


def _check_module_p(modules: pd.DataFrame, alpha: float | None, path: Path, fix: str) -> None:
    """A module's ``p`` is the largest over the null models of its p adjusted over the
    modules (Benjamini-Hochberg): never below a null's own, unadjusted ``p_<null>`` (edited
    to 0.01, it was counted beside a card showing a null's p of 0.06), and ``significant``
    only below ``config.alpha`` (one marked so by hand, and counted in ``atlas.json``, was
    named a module above its p of 0.9)."""
    if "p" not in modules.columns or modules.empty:
        return
    p = modules["p"].to_numpy(np.float64, na_value=np.nan)
    for col in [c for c in modules.columns if str(c).startswith("p_")]:
        own = modules[col].to_numpy(np.float64, na_value=np.nan)
        _refuse_first(
            modules,
            p < own * (1 - 1e-9),
            lambda i, m, col=col, own=own: (
                f"`p` of module {m} in modules.parquet in '{path}' is "
                f"{p[i]:.3g}, below its unadjusted `{col}` {own[i]:.3g}: it is the largest over "
                f"the nulls after adjusting for the modules tested; {fix}."
            ),
        )
    if alpha is not None and "significant" in modules.columns:
        _refuse_first(
            modules,
            modules["significant"].to_numpy(bool) & ~(p < alpha),
            lambda i, m: (
                f"modules.parquet in '{path}' marks module {m} `significant` with a "
                f"p of {p[i]:.3g}, not below `config.alpha` {alpha:g} of atlas.json; {fix}."
            ),
        )


def _refuse_first(modules: pd.DataFrame, wrong: np.ndarray, say: Any) -> None:
    """Refuse the first module where ``wrong``, in the words ``say(row, module)`` gives."""
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise AtlasFileError(say(i, int(modules["module"].iloc[i])))


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


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_members(s: dict[str, Any], meta: Path, fix: str) -> None:
    """The members of the SAE ensemble and of each correlation view agree with what they
    are counted from: the ensemble's ``n_members`` is its SAEs times (1 + its row
    resamples), every scale of ``levels`` has as many members (and the number of modules
    of each), one module's reproducibility per consensus module, and the reported scale is
    the one marked ``chosen``. A member count edited to 1 (or from 1) turned the verdict's
    "not tested for reproducibility" into "do not reproduce" (and counted modules of one
    member), and one of 99 was shown as the ensemble's beside its 3 SAEs x 2 samples."""
    views = s.get("cross_check") if isinstance(s.get("cross_check"), dict) else {}
    named = [("ensemble", s.get("ensemble"))]
    named += [(f"cross_check.{k}", v) for k, v in views.items()]
    for name, view in named:
        if not isinstance(view, dict):
            continue
        n = _count(view.get("n_members"))
        saes, boot = _count(view.get("n_saes")), _count(view.get("n_bootstrap"))
        if n is not None and saes is not None and boot is not None and n != saes * (1 + boot):
            raise AtlasFileError(
                f"`{name}.n_members` in '{meta}' is {n}, but its {saes} SAEs x (1 + {boot} "
                f"row resamples) give {saes * (1 + boot)} members; {fix}."
            )
        levels = view.get("levels") if isinstance(view.get("levels"), list) else []
        for i, lv in enumerate(lv for lv in levels if isinstance(lv, dict)):
            where = f"`{name}.levels[{i}]"
            per = lv.get("member_n_modules")
            if n is not None and _count(lv.get("n_members")) not in (None, n):
                raise AtlasFileError(
                    f"{where}.n_members` in '{meta}' is {lv['n_members']}, but "
                    f"`{name}.n_members` is {n}; {fix}."
                )
            if n is not None and isinstance(per, list) and len(per) != n:
                raise AtlasFileError(
                    f"{where}.member_n_modules` in '{meta}' lists {len(per)} members' counts, "
                    f"but the view has {n} members; {fix}."
                )
            n_consensus = _count(lv.get("n_consensus_modules"))
            shares = lv.get("reproducibility")
            if n_consensus is not None and isinstance(shares, list) and len(shares) != n_consensus:
                raise AtlasFileError(
                    f"{where}.reproducibility` in '{meta}' has {len(shares)} figure(s), but the "
                    f"scale has {n_consensus} consensus modules; {fix}."
                )
            reproducible = _count(lv.get("n_reproducible_modules"))
            if None not in (reproducible, n_consensus) and reproducible > n_consensus:
                raise AtlasFileError(
                    f"{where}.n_reproducible_modules` in '{meta}' is {reproducible}, more than "
                    f"its {n_consensus} consensus modules; {fix}."
                )
        marked = [lv for lv in levels if isinstance(lv, dict) and "chosen" in lv]
        chosen = [lv for lv in marked if lv["chosen"] is True]
        if marked and len(chosen) != 1:
            raise AtlasFileError(
                f"`{name}.levels` in '{meta}' marks {len(chosen)} scales `chosen`, not one; {fix}."
            )
        if chosen and view.get("scale") != chosen[0].get("scale"):
            raise AtlasFileError(
                f"`{name}.scale` in '{meta}' is {view.get('scale')!r}, but the scale its "
                f"`levels` mark `chosen` is {chosen[0].get('scale')!r}; {fix}."
            )


def _check_sweep_lists(s: dict[str, Any], meta: Path, fix: str) -> None:
    """``sweep_modules``: a setting a sweep varies, one figure per member (``n_modules``,
    ``atlas_ari``) and one per pair of neighbouring members (``neighbour_ari``): lists of
    other lengths were shown cut to the shortest, against other members' values."""
    from ..sweep.members import SWEEPABLE

    sm = s.get("sweep_modules")
    if not isinstance(sm, dict) or not isinstance(sm.get("values"), list):
        return
    if sm.get("over") not in SWEEPABLE:
        raise AtlasFileError(
            f"`sweep_modules.over` in '{meta}' is {sm.get('over')!r}, not a setting a sweep "
            f"varies ({', '.join(SWEEPABLE)}); {fix}."
        )
    n = len(sm["values"])
    for key, want in (("n_modules", n), ("atlas_ari", n), ("neighbour_ari", max(n - 1, 0))):
        got = sm.get(key)
        if isinstance(got, list) and len(got) != want:
            raise AtlasFileError(
                f"`sweep_modules.{key}` in '{meta}' has {len(got)} figure(s), but its {n} "
                f"`values` give {want}; {fix}."
            )


def _check_graph_counts(atlas: Atlas, meta: Path, fix: str) -> None:
    """The counts the verdict's sentence gives where no module could be found: the dense
    and global-mode features are the ones features.parquet marks so, and the graph tested
    every pair of the other features that fire (``graph.n_tests``), of which
    ``graph.n_edges`` passed. Edited, they were the page's headline ("fewer than two of
    the SAE's features can be tested", "-4 fire on more than 30% of them") above a
    features table of hundreds that fire and were tested."""
    s, f = atlas.summary, atlas.features
    for key, col in (("n_dense_features", "dense"), ("n_global_mode_features", "global_mode")):
        said = _count(s.get(key))
        if said is None or col not in f.columns or not pd.api.types.is_bool_dtype(f[col]):
            continue
        if said != int(f[col].sum()):
            raise AtlasFileError(
                f"`{key}` in '{meta}' is {said}, but features.parquet marks {int(f[col].sum())} "
                f"features `{col}`; {fix}."
            )
    graph = s.get("graph") if isinstance(s.get("graph"), dict) else {}
    tests, edges = _count(graph.get("n_tests")), _count(graph.get("n_edges"))
    if tests is not None and edges is not None and edges > tests:
        raise AtlasFileError(
            f"`graph.n_edges` in '{meta}' is {edges}, more than the {tests} pairs the graph "
            f"tested (`graph.n_tests`); {fix}."
        )
    # the page's "Rows analysed" and the verdict's "on these N rows": the graph counts
    # them (or their windows, fewer); edited to 5, they were shown above a graph of 1,797
    rows, counted = _count(s.get("n_rows_encoded")), _count(graph.get("n_rows"))
    windows = graph.get("window_applied") is not False
    if (
        rows is not None
        and counted is not None
        and (counted > rows or counted != rows and not windows)
    ):
        raise AtlasFileError(
            f"`n_rows_encoded` in '{meta}' is {rows}, but the co-occurrence graph counted "
            f"{counted} rows (`graph.n_rows`); {fix}."
        )
    repeated = _count(s.get("n_repeated_rows"))  # "5,000 of the 3,000 rows (167%)"
    if repeated is not None and rows is not None and repeated >= max(rows, 1):
        raise AtlasFileError(
            f"`n_repeated_rows` in '{meta}' is {repeated}, but only {rows} rows were encoded "
            f"(`n_rows_encoded`), the first of them no repeat; {fix}."
        )
    columns = ("dense", "global_mode", "firing_density")
    if tests is None or not set(columns) <= set(f.columns):
        return
    try:
        kept = ~f["dense"].to_numpy(bool) & ~f["global_mode"].to_numpy(bool)
        fire = int((kept & (f["firing_density"].to_numpy(np.float64) > 0)).sum())
    except (TypeError, ValueError):
        return  # (the columns' kinds are refused by name)
    if tests != fire * (fire - 1) // 2:
        raise AtlasFileError(
            f"`graph.n_tests` in '{meta}' is {tests}, but features.parquet has {fire} features "
            f"that fire and are neither dense nor on the global mode, whose pairs the graph "
            f"tests: {fire * (fire - 1) // 2}; {fix}."
        )


def _check_ablation_draws(atlas: Atlas, path: Path, fix: str) -> None:
    """A module's random unit sets (``ablation_draws``) are at most the ablation's
    ``n_random``, and fewer only where they stopped early, once ``stop_after`` of them did
    at least its damage; its ``ablation_p`` is at least ``1 / (1 + n_random)``. The
    headline says whether the ablation could test anything from ``n_random``: edited from
    5 to 100, it dropped "not tested" above modules of 5 sets each (and from 100 to 5 said
    it of modules of 100)."""
    m, a = atlas.modules, atlas.summary.get("ablation")
    if not isinstance(a, dict) or not {"ablation_draws", "ablation_p"} <= set(m.columns):
        return
    n_random, stop = _count(a.get("n_random")), _count(a.get("stop_after"))
    if n_random is None or m.empty:
        return
    draws = m["ablation_draws"].to_numpy(np.int64)
    p = m["ablation_p"].to_numpy(np.float64, na_value=np.nan)
    early = draws < n_random
    wrong = (draws > n_random) | (early & (draws < (stop or 0))) | (p < 1 / (1 + n_random))
    for i in np.flatnonzero(wrong)[:1]:
        raise AtlasFileError(
            f"modules.parquet in '{path}' gives module {int(m['module'].iloc[i])} "
            f"{int(draws[i])} random unit sets and an `ablation_p` of {p[i]:.3g}, but "
            f"atlas.json's ablation drew up to {n_random} per module (`ablation.n_random`), "
            f"stopping early only once {stop} did at least its damage; {fix}."
        )


def _check_own_counts(s: dict[str, Any], meta: Path, fix: str) -> None:
    """The significant modules of the SAE's own partition (``sae_modules``) and of the
    random-SAE control (``control``, beside it the trained SAE's, ``control.real``) are
    some of their modules: "the SAE's own 5 significant reproducible modules cover fewer
    units" was the headline's of an SAE of 0 modules, and the control's table showed 9
    significant modules of 0."""
    control = s.get("control") if isinstance(s.get("control"), dict) else {}
    for name, part in (
        ("sae_modules", s.get("sae_modules")),
        ("control", control),
        ("control.real", control.get("real")),
    ):
        if not isinstance(part, dict):
            continue
        n, sig = _count(part.get("n_modules")), _count(part.get("n_significant_modules"))
        if n is not None and sig is not None and sig > n:
            raise AtlasFileError(
                f"`{name}.n_significant_modules` in '{meta}' is {sig}, more than its {n} "
                f"modules (`{name}.n_modules`); {fix}."
            )
