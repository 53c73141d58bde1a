"""``map_structure(sae, store, AtlasConfig()) -> Atlas``: the core atlas.

1. Encode the store with the SAE into sparse codes and keep the strong firings
   of the features that can be in a module (:mod:`.inputs`, :mod:`.graph.firing`).
2. For every member of the ensemble (the SAE and its seed SAEs, on all rows and
   on bootstrap resamples; :mod:`.inference.ensemble`), count feature
   co-occurrence, keep the significant positive affinities, find feature
   communities at every resolution and project them onto units
   (:mod:`.graph.communities`); the consensus of the members' unit modules,
   their reproducibility and the resolution to report (:mod:`.inference.consensus`);
   each unit in the module whose energy its energy follows (:mod:`.inference.coupling`);
   the same over the units' own correlations (:mod:`.inference.correlation`).
3. Test the analysed SAE's partition and every reproducible module against null
   models (:mod:`.inference.nulls`, :mod:`.inference.significance`), and state the
   one verdict (:mod:`.inference.outcome`).

That is all it does. The atlas's other steps (profiles, geometry, the random-SAE
control) take this atlas and add to it; :func:`.analyze.analyze` runs them in
order.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..sae.model import sae_fingerprint
from ..store import ActivationStore
from .atlas import Atlas
from .config import AtlasConfig
from .constants import MODULE_KIND
from .describe.tables import features_table, modules_table
from .fingerprints import store_moments
from .graph.communities import Modules
from .graph.finders import modularity, onehot
from .graph.units import UnitModules, project_modules
from .inference.cohesion import relative_spread
from .inference.correlation import CorrelationView, correlation_view
from .inference.coupling import feature_modules
from .inference.ensemble import build_ensemble
from .inference.outcome import decide, match_jaccard
from .inference.significance import sampling_error, significance_tests, strictness, verdict
from .inputs import (
    DEFAULT_TIMEOUT_S,
    AtlasInputs,
    SAELike,
    prepared_on_ranks,
    store_fingerprint,
)
from .repeated_rows import repeated_rows

log = logging.getLogger(__name__)


def map_structure(
    sae: SAELike,
    store: ActivationStore | str | Path,
    config: AtlasConfig = AtlasConfig(),
    *,
    seed_saes: Sequence[SAELike] = (),
    null_source: SAELike | None = None,
    progress: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Atlas:
    """The core atlas of ``sae`` on ``store``: modules of units that the ensemble of
    ``sae`` and ``seed_saes`` (SAEs trained like it with other seeds) reproduces, the
    feature communities behind them, their significance and the verdict.

    ``null_source``: the SAE the dictionary null synthesises rows from when
    ``config.null_dictionary`` is ``"seed"`` (default: the first of ``seed_saes``,
    else one trained like ``sae`` with the next seed, see :mod:`.inference.nulls`).
    For profiles, geometry and the control, use :func:`.analyze.analyze`. Under
    ``torchrun`` every rank calls it alike and gets the atlas one process computes
    (``timeout_s``: see :func:`.inputs.prepared_on_ranks`).
    """

    kw = dict(seed_saes=seed_saes, null_source=null_source, progress=progress)
    return prepared_on_ranks(core_atlas, sae, store, config, timeout_s, **kw)


def core_atlas(inp: AtlasInputs) -> Atlas:
    """The core atlas (see :func:`map_structure`) of prepared inputs."""
    cfg, f = inp.cfg, inp.main
    ens = build_ensemble(inp)
    main = ens.main_modules
    views = [v for v in (correlation_view(inp), correlation_view(inp, clean=True)) if v]
    # the view reported when the SAE's modules do not hold up: the raw correlations (the
    # cleaned ones only say whether a module is visible without the SAE: on data without
    # modules, units that share features still form reproducible cleaned clusters)
    corr = views[0] if views else None
    unit_module = ens.unit_module
    feature_module = feature_modules(main.units.module, main.feature_module, unit_module)
    q_se = sampling_error(ens.member_modularity)
    spread = relative_spread(ens.member_cohesion)
    tests, source_name = significance_tests(inp, main, feature_module, q_se, spread)
    partition_ok, module_ok, module_p = verdict(tests, cfg.alpha)
    module_tests = tests
    n_modules = int(unit_module.max(initial=-1)) + 1
    if not tests:
        module_ok, module_p = np.zeros(n_modules, bool), np.full(n_modules, np.nan)
    # modules past the last one with features have no test: not significant
    module_ok = np.pad(module_ok[:n_modules], (0, max(n_modules - module_ok.size, 0)))
    module_p = np.pad(
        module_p[:n_modules], (0, max(n_modules - module_p.size, 0)), constant_values=np.nan
    )
    modules_from, membership, coupling = "sae", ens.membership, ens.coupling
    sae_module = unit_module
    sae_counted = (
        int(((unit_module >= 0) & module_ok[unit_module.clip(0)]).sum()) if n_modules else 0
    )
    sae_summary = {
        "n_modules": n_modules,
        "n_significant_modules": int(module_ok.sum()),
        "n_units": sae_counted,
        "nulls": [t.as_dict() for t in tests],
    }
    clean = views[1] if len(views) > 1 else None
    if corr is not None and _correlations_first(corr.counted, unit_module, module_ok, clean):
        # the units' plain correlations divide the units into modules that hold up, and
        # the SAE's counted modules (if any) lie inside them: the coarser map comes first,
        # and the verdict says the SAE adds nothing to it (its modules: `sae_module`)
        modules_from, membership = "unit_correlations", corr.levels[corr.chosen].membership
        coupling = np.zeros(unit_module.size)
        unit_module, module_ok, module_p = corr.labels, corr.module_ok, corr.module_p
        tests, module_tests = list(corr.tests), corr.module_tests
        n_modules = int(unit_module.max(initial=-1)) + 1
        feature_module = _features_of(main.attribution, unit_module, n_modules, f.excluded)
    units = project_modules(main.attribution, feature_module, n_modules, cfg.min_enrichment)
    layers = f.codes.layers
    unit_layer = np.concatenate([np.full(l.n_units, i) for i, l in enumerate(layers)])
    units_df = pd.DataFrame(
        {
            "unit": np.arange(main.attribution.shape[1]),
            "layer": [layers[i].name for i in unit_layer],
            "index": np.concatenate([np.arange(l.n_units) for l in layers]),
            "module": unit_module.astype(np.int64),
            "membership": np.where(unit_module >= 0, membership, 0.0).astype(np.float64),
            "coupling": np.where(unit_module >= 0, coupling, 0.0).astype(np.float64),
            "shared": units.shared & (unit_module >= 0),
            "submodule": (
                corr.submodules() if modules_from == "unit_correlations" else ens.submodules()
            ).astype(np.int64),
            "sae_module": sae_module.astype(np.int64),
            "consensus_module": ens.level.labels.astype(np.int64),
            "cross_check_module": corr.labels if corr is not None else -1,
        }
    )
    features_df = features_table(
        inp.sae, f.codes, main.attribution, feature_module, unit_layer, cfg
    )
    features_df.insert(3, "dense", f.dense)
    features_df.insert(4, "global_mode", f.global_feats)
    features_df.insert(
        4,
        "firing_density",
        f.n_strong / max(f.fires.shape[0], 1),
    )
    features_df["community"] = main.feature_module
    unit_modules = UnitModules(unit_module, units.membership, units.shared, units.mass)
    modules_df = modules_table(
        n_modules,
        unit_modules,
        feature_module,
        unit_layer,
        [l.name for l in layers],
        main.graph.adjacency,
        module_tests,
        module_ok,
        module_p,
    )
    reproducibility = ens.reproducibility
    if modules_from == "unit_correlations":
        reproducibility = corr.reproducibility()
    elif ens.level.members.shape[0] == 1:
        # one member recovers its own modules: 1.00 was shown beside a verdict saying one
        # member cannot test reproducibility; untested, it is undefined
        reproducibility = np.full(len(reproducibility), np.nan)
    modules_df["reproducibility"] = reproducibility
    modules_df["stability"] = reproducibility
    # can plain correlation find the module at all? the best match over both views and
    # all their scales (each view's reported scale is chosen for its own partition)
    modules_df["correlation_jaccard"] = (
        np.max(
            [
                match_jaccard(unit_module, lv.reproducible_labels())
                for v in views
                for lv in v.levels
            ],
            axis=0,
        )
        if views and modules_from == "sae"
        else match_jaccard(unit_module, None)
    )
    summary = _summary(inp, main, tests, partition_ok, corr, source_name, features_df)
    summary["modules_from"] = modules_from
    summary["sae_modules"] = sae_summary
    summary["ensemble"] = ens.summary()
    summary["cross_check"] = {("clean" if v.clean else "raw"): v.summary() for v in views}
    summary["sae_partition_significant"] = bool(partition_ok)
    summary["partition_significant"] = bool(partition_ok or any(v.partition_ok for v in views))
    atlas = Atlas(units=units_df, features=features_df, modules=modules_df, summary=summary)
    decide(atlas)
    return atlas


def _correlations_first(
    corr: np.ndarray, sae: np.ndarray, sae_ok: np.ndarray, clean: CorrelationView | None
) -> bool:
    """Whether the correlation view's counted modules ``corr`` (unit labels) are the top
    level: they exist and either the SAE has no counted module, or they are a coarser map
    of the SAE's counted modules: they hold more units, every counted SAE module lies
    (75% of its units) inside one of them, each of them holds one or more, and where one
    holds two or more, the cleaned correlations (``clean``: without the global mode) put
    those together too, at some scale.

    The raw correlations hold the global mode, and units that share only its loadings
    form groups there: on ``blocks`` data of other seeds (``bench/planted_variants.py``),
    where the SAE's modules were the planted ones, the raw view's top level was the
    planted modules plus a module of the free units, or merged two planted modules that
    never fire together with the free units; reported in place of the SAE's, they gave
    ARI 0.49 against the planted modules."""
    if not (corr >= 0).any():
        return False
    counted = np.flatnonzero(sae_ok)
    if counted.size == 0:
        return True
    if (corr >= 0).sum() <= np.isin(sae, counted).sum():
        return False
    host = {m: _host(corr, sae, m) for m in counted}
    if None in host.values():
        return False
    if set(host.values()) != set(range(int(corr.max()) + 1)):
        return False  # a module of units outside every SAE module: no coarser map of them
    merged = [[m for m in counted if host[m] == h] for h in set(host.values())]
    return all(len(ms) < 2 or _together(clean, sae, ms) for ms in merged)


def _host(labels: np.ndarray, sae: np.ndarray, m: int) -> int | None:
    """The module of ``labels`` holding 75% of the units of SAE module ``m`` (None: none)."""
    inside = labels[sae == m]
    inside = inside[inside >= 0]
    need = 0.75 * (sae == m).sum()
    if inside.size < need or np.bincount(inside).max() < need:
        return None
    return int(np.bincount(inside).argmax())


def _together(clean: CorrelationView | None, sae: np.ndarray, modules: list[int]) -> bool:
    """Whether some scale of the cleaned correlation view has a reproducible module that
    holds 75% of the units of each of ``modules`` (SAE modules, in ``sae``)."""
    if clean is None:
        return False
    for lv in clean.levels:
        hosts = {_host(lv.reproducible_labels(), sae, m) for m in modules}
        if len(hosts) == 1 and None not in hosts:
            return True
    return False


def _features_of(
    attr: np.ndarray, unit_module: np.ndarray, n_modules: int, excluded: np.ndarray
) -> np.ndarray:
    """``[d_sae]`` the unit module receiving at least half of each feature's attributed
    energy (-1: none does, or the feature is ``excluded``, dense or carrying the global
    mode: kept out of modules here as in the SAE's own communities)."""
    if n_modules == 0:
        return np.full(attr.shape[0], -1)
    per = np.asarray(onehot(unit_module, n_modules).T @ attr.T).T  # [d_sae, n_modules]
    total = attr.sum(axis=1)
    best = per.argmax(axis=1)
    share = per[np.arange(len(best)), best] / np.where(total > 0, total, 1.0)
    return np.where((share >= 0.5) & ~excluded, best, -1)


def _summary(
    inp: AtlasInputs,
    main: Modules,
    tests: list,
    partition_ok: bool,
    corr,
    source_name: str | None,
    features_df: pd.DataFrame,
) -> dict:
    """``atlas.json``'s summary of the core atlas (the verdict and counts are
    :func:`.inference.outcome.decide`'s)."""
    cfg, f, sae = inp.cfg, inp.main, inp.sae
    codes, graph = f.codes, main.graph
    windowed = codes.window_applied(cfg.window)  # (prepare warns when it is not)
    worst = max(tests, key=lambda t: strictness(t.p, t.z)) if tests else None
    return {
        "module_kind": MODULE_KIND,
        "statistic": "modularity (resolution 1) of the best partition the finder reaches "
        "over its scales (or of the reported scale's modules, if higher), against the best it "
        "reaches on each null's graphs; `z`, `p` and `modularity` are the strictest null's",
        "modularity": worst.q if worst else None,
        "modularity_of_modules": float(modularity(graph.adjacency, main.feature_module)),
        "null_mean": worst.null_mean if worst else None,
        "null_std": worst.null_std if worst else None,
        "z": worst.as_dict()["z"] if worst else None,
        "p": worst.p if worst else None,
        "strictest_null": worst.name if worst else None,
        "nulls": [t.as_dict() for t in tests],
        "dictionary_null_source": source_name,
        "method": cfg.method,
        "resolution": getattr(main.finder, "resolution_", None),
        "graph": {
            "affinity": cfg.affinity,
            "window": cfg.window,
            "window_applied": bool(windowed),
            "n_rows": int(graph.n_rows),
            "n_edges": int(graph.n_edges),
            "n_tests": int(graph.n_tests),
            "edge_alpha": cfg.edge_alpha,
        },
        # over the features with a correlation (dead features have none)
        "features_max_unit_corr_le_0_3": float(
            (features_df["max_unit_corr"].dropna() <= 0.3).mean()
            if features_df["max_unit_corr"].notna().any()
            else float("nan")
        ),
        "n_rows_encoded": int(codes.n_rows),
        # copies of one row count as evidence (:data:`.inputs.REPEATED_SHARE`)
        "n_repeated_rows": repeated_rows(codes),
        "mean_l0": float(codes.matrix.nnz / max(codes.n_rows, 1)),
        "layers": [l.name for l in codes.layers],
        "n_dense_features": int(f.dense.sum()),
        "n_global_mode_features": int(f.global_feats.sum()),
        "global_mode": inp.mode.mode is not None,
        # absolute: a path relative to where analyze ran named another SAE (or store) when
        # the report or an export ran from another directory
        "sae": {
            "path": None if inp.sae_path is None else str(Path(inp.sae_path).resolve()),
            "fingerprint": sae_fingerprint(sae),
            # the rows it was trained on: the report shows a sweep trained on the same rows
            "rows_digest": _text_or_none(sae.cfg.metadata.get("rows_digest")),
            "architecture": sae.cfg.architecture,
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "k": sae.cfg.k,
        },
        "store": str(Path(inp.store.path).resolve()),
        "store_fingerprint": store_fingerprint(inp.store),
        "store_moments": store_moments(inp.store),  # the fingerprint reads 64 rows
        # rows of a .npy left out for NaN/Inf (--on-nonfinite skip): a reader of the store
        # opens it the same way, or its rows are not the atlas's
        "store_skipped_rows": int(inp.store.n_skipped_rows),
        "config": cfg.to_json(),
        "versions": {"saeatlas": __version__, "python": platform.python_version()},
    }


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
