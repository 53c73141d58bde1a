"""``map_structure(sae, store, AtlasConfig()) -> Atlas``: the core atlas.

1. Encode the store with the SAE into sparse codes and keep the strong firings
   of the features that can be in a module (:mod:`.inputs`, :mod:`.graph.firing`).
2. Count feature co-occurrence, keep the significant positive affinities, find
   feature communities and project them onto units (:mod:`.graph.communities`),
   and cross-check against the units' own cleaned correlation graph.
3. Test the partition and every module against null models
   (:mod:`.inference.nulls`, :mod:`.inference.significance`).

That is all it does. The atlas's other steps (profiles, geometry, stability, the
random-SAE control) take this atlas and add to it; :func:`.analyze.analyze`
runs them in order.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from .. import __version__
from ..store import ActivationStore
from .atlas import Atlas
from .config import AtlasConfig
from .constants import MODULE_KIND
from .describe.tables import features_table, modules_table
from .graph.communities import Modules, find_modules
from .graph.finders import LeidenModules, modularity
from .graph.units import unit_correlation_graph
from .inference.significance import significance_tests, verdict
from .inputs import AtlasInputs, SAELike, prepare


def map_structure(
    sae: SAELike,
    store: ActivationStore | str | Path,
    config: AtlasConfig = AtlasConfig(),
    *,
    seed_saes: Sequence[SAELike] = (),
    null_source: SAELike | None = None,
    progress: bool = False,
) -> Atlas:
    """The core atlas of ``sae`` on ``store``: modules of units, the feature
    communities behind them, and their significance against the null models.

    ``null_source``: the SAE the dictionary null synthesises rows from when
    ``config.null_dictionary`` is ``"seed"`` (default: the first of ``seed_saes``,
    else one trained like ``sae`` with the next seed, see :mod:`.inference.nulls`).
    For profiles, geometry, stability and the control, use :func:`.analyze.analyze`.
    """
    inp = prepare(
        sae, store, config, seed_saes=seed_saes, null_source=null_source, progress=progress
    )
    return core_atlas(inp)


def core_atlas(inp: AtlasInputs) -> Atlas:
    """The core atlas (see :func:`map_structure`) of prepared inputs."""
    cfg, f = inp.cfg, inp.main
    found = find_modules(f, cfg)
    cross = _cross_check(inp, found.units.module, cfg)
    tests, source_name = significance_tests(inp, found)
    partition_ok, module_ok, module_p = verdict(tests, cfg.alpha)
    if not tests:
        module_p = np.full(found.n_modules, np.nan)
    layers = f.codes.layers
    unit_layer = np.concatenate([np.full(l.n_units, i) for i, l in enumerate(layers)])
    units_df = pd.DataFrame(
        {
            "unit": np.arange(found.attribution.shape[1]),
            "layer": [layers[i].name for i in unit_layer],
            "index": np.concatenate([np.arange(l.n_units) for l in layers]),
            "module": found.units.module.astype(np.int64),
            "membership": found.units.membership.astype(np.float64),
            "shared": found.units.shared,
            "cross_check_module": cross["labels"],
        }
    )
    features_df = features_table(
        inp.sae, f.codes, found.attribution, found.feature_module, unit_layer, cfg
    )
    features_df.insert(3, "dense", f.dense)
    features_df.insert(4, "global_mode", f.global_feats)
    features_df.insert(
        4,
        "firing_density",
        np.bincount(f.fires.indices, minlength=f.fires.shape[1]) / max(f.fires.shape[0], 1),
    )
    modules_df = modules_table(
        found.n_modules,
        found.units,
        found.feature_module,
        unit_layer,
        [l.name for l in layers],
        found.graph.adjacency,
        tests,
        module_ok,
        module_p,
    )
    n_sig = int(module_ok.sum()) if tests else 0
    summary = _summary(inp, found, tests, partition_ok, n_sig, cross, source_name, features_df)
    return Atlas(units=units_df, features=features_df, modules=modules_df, summary=summary)


def _summary(
    inp: AtlasInputs,
    found: Modules,
    tests: list,
    partition_ok: bool,
    n_sig: int,
    cross: dict,
    source_name: str | None,
    features_df: pd.DataFrame,
) -> dict:
    """``atlas.json``'s summary of the core atlas."""
    cfg, f, sae = inp.cfg, inp.main, inp.sae
    codes, graph = f.codes, found.graph
    worst = max(tests, key=lambda t: (np.nan_to_num(t.p, nan=1.0), -t.z)) if tests else None
    return {
        "n_modules": found.n_modules,
        "n_significant_modules": n_sig,
        "significant": bool(partition_ok),
        "message": _message(n_sig, found.n_modules, partition_ok, graph.n_edges, codes),
        "module_kind": MODULE_KIND,
        "modularity": float(modularity(graph.adjacency, found.feature_module)),
        "modularity_before_core": float(found.finder.modularity_),
        "null_mean": worst.null_mean if worst else None,
        "null_std": worst.null_std if worst else None,
        "z": worst.z if worst else None,
        "p": worst.p if worst else None,
        "strictest_null": worst.name if worst else None,
        "nulls": [t.as_dict() for t in tests],
        "dictionary_null_source": source_name,
        "method": cfg.method,
        "resolution": getattr(found.finder, "resolution_", None),
        "graph": {
            "affinity": cfg.affinity,
            "window": cfg.window,
            "n_rows": int(graph.n_rows),
            "n_edges": int(graph.n_edges),
            "n_tests": int(graph.n_tests),
            "edge_alpha": cfg.edge_alpha,
        },
        "cross_check": {k: v for k, v in cross.items() if k != "labels"},
        "features_max_unit_corr_le_0_3": float(
            (features_df["max_unit_corr"] <= 0.3).mean() if len(features_df) else float("nan")
        ),
        "n_rows_encoded": int(codes.n_rows),
        "mean_l0": float(codes.matrix.nnz / max(codes.n_rows, 1)),
        "layers": [l.name for l in codes.layers],
        "n_dense_features": int(f.dense.sum()),
        "n_global_mode_features": int(f.global_feats.sum()),
        "global_mode": inp.mode.mode is not None,
        "sae": {
            "path": inp.sae_path,
            "architecture": sae.cfg.architecture,
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "k": sae.cfg.k,
        },
        "store": str(inp.store.path),
        "config": cfg.to_json(),
        "versions": {"saeatlas": __version__, "python": platform.python_version()},
    }


def _message(n_sig: int, n_modules: int, partition_ok: bool, n_edges: int, codes) -> str:
    """The atlas's verdict in one sentence."""
    if partition_ok and n_sig:
        return f"{n_sig} of {n_modules} modules are significant against every null model."
    if n_edges == 0:
        l0 = codes.matrix.nnz / max(codes.n_rows, 1)
        return (
            f"No modules can be found: no two features fire together more often than chance "
            f"on these {codes.n_rows:,} rows (mean L0 {l0:.1f}), so the co-occurrence graph "
            "has no edges. Use an SAE with more active latents per row (a larger k), more "
            "rows, or count co-firing over consecutive tokens with --window N."
        )
    return "No significant modular structure: the partition does not beat the null models."


def _cross_check(inp: AtlasInputs, unit_module: np.ndarray, cfg: AtlasConfig) -> dict:
    """The units' own cleaned correlation graph, partitioned by Leiden."""
    corr = inp.mode.corr
    if corr is None:
        return {"labels": np.full(unit_module.shape, -1), "ari": None, "ami": None}
    g = unit_correlation_graph(corr, inp.main.codes.n_rows, clean=True)
    labels = LeidenModules(cfg.resolutions, 2, cfg.seed).fit(g).labels_
    return {
        "labels": labels,
        "method": "leiden on unit correlations without the global mode and noise bulk",
        "n_modules": int(labels.max() + 1) if labels.size else 0,
        "ari": float(adjusted_rand_score(unit_module, labels)),
        "ami": float(adjusted_mutual_info_score(unit_module, labels)),
    }
