"""``map_structure(sae, store, AtlasConfig()) -> Atlas``: the analysis behind ``saeatlas analyze``.

1. Encode the store with the SAE into sparse codes (:mod:`.codes`).
2. Count feature co-occurrence and keep the significant positive affinities
   (:mod:`.cooccurrence`).
3. Find feature communities (:mod:`.finders`).
4. Project them onto units by attribution (:mod:`.units`) and cross-check
   against the units' own cleaned correlation graph.
5. Test the partition and every module against null models (:mod:`.nulls`,
   :mod:`.significance`).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from .. import __version__
from .._progress import progress_bar
from ..sae import SparseAutoencoder
from ..store import ActivationStore
from .atlas import Atlas
from .codes import Codes, encode_store, strong_firing
from .config import AtlasConfig
from .cooccurrence import build_graph, count_cooccurrence
from .describe import describe_modules
from .finders import FINDERS, LeidenModules, core_members, modularity
from .nulls import DictionarySource, dictionary_null_codes, dictionary_source, permute_codes, rewire
from .significance import NullTest, null_test, verdict
from .tables import features_table, modules_table
from .units import (
    attribution,
    excluded_features,
    global_mode,
    project_modules,
    unit_correlation,
    unit_correlation_graph,
)

log = logging.getLogger(__name__)

MODULE_KIND = "co-activation: units driven by features that fire together (not a causal claim)"
#: Rows per contiguous block when a subsample of rows is drawn (keeps token windows whole).
BLOCK_ROWS = 256


def make_finder(cfg: AtlasConfig):
    """The configured module finder (an unfitted estimator)."""
    cls = FINDERS[cfg.method]
    if cls is LeidenModules:
        return cls(cfg.resolutions, cfg.min_module_features, cfg.seed)
    return cls(min_size=cfg.min_module_features, random_state=cfg.seed)


def map_structure(
    sae: SparseAutoencoder | str | Path,
    store: ActivationStore | str | Path,
    config: AtlasConfig = AtlasConfig(),
    *,
    seed_saes: Sequence[SparseAutoencoder | str | Path] = (),
    null_source: SparseAutoencoder | str | Path | None = None,
    progress: bool = False,
) -> Atlas:
    """Find the modules of units behind ``sae``'s features on ``store``, with significance.

    ``seed_saes``: SAEs trained the same way with other seeds; with them (or with
    ``config.n_bootstrap``) every module gets a stability figure.
    ``null_source``: the SAE the dictionary null synthesises rows from when
    ``config.null_dictionary`` is ``"seed"`` (default: the first of ``seed_saes``,
    else one trained like ``sae`` with the next seed, see :mod:`.nulls`).
    """
    cfg = config
    sae_path = None if isinstance(sae, SparseAutoencoder) else str(sae)
    sae = sae if isinstance(sae, SparseAutoencoder) else SparseAutoencoder.load(sae)
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    codes = encode_store(
        sae,
        store,
        max_rows=cfg.max_rows,
        batch_size=cfg.batch_size,
        device=cfg.device,
        progress=progress,
    )
    fires = strong_firing(codes.matrix, cfg.min_activation)
    corr = (
        unit_correlation(codes.unit_gram, codes.unit_mean, codes.unit_std, codes.n_rows)
        if codes.unit_gram is not None
        else None
    )
    mode = global_mode(corr) if corr is not None else None
    mode_var = float(mode @ corr @ mode) if mode is not None else 0.0
    dense, global_feats = excluded_features(
        sae, codes, fires, mode, mode_var, cfg.max_density, cfg.global_mode_cosine
    )
    excluded = dense | global_feats
    fires = drop_columns(fires, excluded)
    graph, finder, feature_module = feature_communities(fires, codes.samples, cfg)
    n_modules = int(feature_module.max(initial=-1)) + 1
    attr = attribution(sae, codes)
    units = project_modules(attr, feature_module, n_modules, cfg.min_enrichment)
    cross = _cross_check(codes, corr, units.module, cfg)
    source = None
    if "dictionary" in cfg.nulls and cfg.n_null:
        if null_source is None and seed_saes:
            null_source = seed_saes[0]
        source = dictionary_source(
            sae,
            sae_path,
            store,
            null_source,
            codes,
            excluded,
            mode,
            mode_var,
            cfg,
            progress,
        )
    tests = _significance(
        sae, codes, fires, excluded, feature_module, finder, cfg, source, progress
    )
    partition_ok, module_ok, module_p = verdict(tests, cfg.alpha)
    if not tests:
        module_p = np.full(n_modules, np.nan)
    layer_names = [l.name for l in codes.layers]
    unit_layer = np.concatenate([np.full(l.n_units, i) for i, l in enumerate(codes.layers)])
    unit_index = np.concatenate([np.arange(l.n_units) for l in codes.layers])

    units_df = pd.DataFrame(
        {
            "unit": np.arange(attr.shape[1]),
            "layer": [layer_names[i] for i in unit_layer],
            "index": unit_index,
            "module": units.module.astype(np.int64),
            "membership": units.membership.astype(np.float64),
            "shared": units.shared,
            "cross_check_module": cross["labels"],
        }
    )
    features_df = features_table(sae, codes, attr, feature_module, unit_layer, cfg)
    described = describe_modules(
        sae,
        store,
        codes,
        feature_module,
        units.module,
        unit_layer,
        label_column=cfg.label_column,
        n_examples=cfg.n_examples,
        seed=cfg.seed,
    )
    for name, values in described.feature_columns.items():
        features_df[name] = values
    features_df.insert(3, "dense", dense)
    features_df.insert(4, "global_mode", global_feats)
    features_df.insert(
        4,
        "firing_density",
        np.bincount(fires.indices, minlength=fires.shape[1]) / max(fires.shape[0], 1),
    )
    modules_df = modules_table(
        n_modules,
        units,
        feature_module,
        unit_layer,
        layer_names,
        graph.adjacency,
        tests,
        module_ok,
        module_p,
    )
    for name, values in described.module_columns.items():
        modules_df[name] = values
    worst = max(tests, key=lambda t: (np.nan_to_num(t.p, nan=1.0), -t.z)) if tests else None
    n_sig = int(module_ok.sum()) if tests else 0
    summary = {
        "n_modules": int(n_modules),
        "n_significant_modules": n_sig,
        "significant": bool(partition_ok),
        "message": _message(n_sig, n_modules, partition_ok, graph.n_edges, codes),
        "module_kind": MODULE_KIND,
        "modularity": float(modularity(graph.adjacency, feature_module)),
        "modularity_before_core": float(finder.modularity_),
        "null_mean": worst.null_mean if worst else None,
        "null_std": worst.null_std if worst else None,
        "z": worst.z if worst else None,
        "p": worst.p if worst else None,
        "strictest_null": worst.name if worst else None,
        "nulls": [t.as_dict() for t in tests],
        "dictionary_null_source": source.name if source else None,
        "method": cfg.method,
        "resolution": getattr(finder, "resolution_", None),
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
        "layers": layer_names,
        "n_dense_features": int(dense.sum()),
        "n_global_mode_features": int(global_feats.sum()),
        "global_mode": mode is not None,
        "sae": {
            "path": sae_path,
            "architecture": sae.cfg.architecture,
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "k": sae.cfg.k,
        },
        "store": str(store.path),
        **described.summary,
        "config": cfg.to_json(),
        "versions": {"saeatlas": __version__, "python": platform.python_version()},
    }
    atlas = Atlas(
        units=units_df,
        features=features_df,
        modules=modules_df,
        summary=summary,
        examples=described.examples,
        flows=described.flows,
    )
    _add_geometry(atlas, sae, cfg)
    if cfg.n_bootstrap or seed_saes:
        _add_stability(atlas, sae, store, cfg, seed_saes, progress)
    if cfg.control:
        from .control import control_atlas

        atlas.summary["control"] = control_atlas(
            sae, store, replace(cfg, control=False, n_bootstrap=0, n_examples=0), real=atlas
        )
    return atlas


def _message(n_sig: int, n_modules: int, partition_ok: bool, n_edges: int, codes: Codes) -> str:
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


def _add_geometry(atlas: Atlas, sae: SparseAutoencoder, cfg: AtlasConfig) -> None:
    """Map coordinates of every feature and the geometry-function agreement."""
    from .geometry import atlas_geometry, feature_map

    xy = feature_map(sae.W_dec.detach(), method=cfg.map_method, random_state=cfg.seed)
    atlas.features["x"], atlas.features["y"] = xy[:, 0], xy[:, 1]
    if atlas.n_modules >= 2:
        labels, agreement = atlas_geometry(sae, atlas, random_state=cfg.seed)
        atlas.features["direction_cluster"] = labels
        atlas.summary["geometry"] = agreement.as_dict()
    atlas.summary["map_method"] = cfg.map_method


def _add_stability(
    atlas: Atlas,
    sae: SparseAutoencoder,
    store: ActivationStore,
    cfg: AtlasConfig,
    seed_saes: Sequence[SparseAutoencoder | str | Path],
    progress: bool,
) -> None:
    """Bootstrap and seed stability per module and feature (see :mod:`.stability`)."""
    from .stability import module_stability

    res = module_stability(
        sae,
        store,
        atlas,
        cfg,
        seeds_saes=seed_saes,
        n_bootstrap=cfg.n_bootstrap,
        random_state=cfg.seed,
        progress=progress,
    )
    # the worse of the bootstrap (feature-level) and seed (unit-level) best-match Jaccard
    jac = np.fmin(res.module_jaccard, res.module_unit_jaccard)
    atlas.modules["stability"] = jac
    atlas.modules["stability_verdict"] = list(res.module_stability)
    atlas.features["stability"] = res.feature_stability
    atlas.summary["stability"] = res.summary()


def drop_columns(matrix: sp.csr_matrix, drop: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with the entries of the flagged columns removed."""
    if not drop.any():
        return matrix
    keep = ~drop[matrix.indices]
    out = sp.csr_matrix((matrix.data * keep, matrix.indices, matrix.indptr), shape=matrix.shape)
    out.eliminate_zeros()
    return out


def _graph(
    matrix: sp.csr_matrix, samples: np.ndarray, cfg: AtlasConfig, n_edges: int | None = None
):
    """The co-occurrence graph of firings ``matrix``: its significant pairs, or its
    ``n_edges`` most significant ones (a null graph as dense as the real one)."""
    co = count_cooccurrence(matrix, window=cfg.window, samples=samples if cfg.window else None)
    return build_graph(co, kind=cfg.affinity, alpha=cfg.edge_alpha, n_edges=n_edges)


def feature_communities(fires: sp.csr_matrix, samples: np.ndarray, cfg: AtlasConfig):
    """The community step: co-occurrence graph of the strong firings ``fires``, the
    configured finder on it, and each community's core (``-1`` outside every core).

    Returns ``(graph, fitted finder, feature labels [d_sae])``; the one place that
    turns firings into feature modules (mapping, bootstrap and seed reruns).
    """
    graph = _graph(fires, samples, cfg)
    finder = make_finder(cfg).fit(graph.adjacency)
    labels = core_members(
        graph.adjacency, finder.labels_, cfg.min_link_fraction, cfg.min_module_features
    )
    return graph, finder, labels


def _subsample(n_rows: int, n_keep: int) -> np.ndarray:
    """Evenly spaced contiguous blocks of rows, ``n_keep`` rows in all (sorted)."""
    if n_keep >= n_rows:
        return np.arange(n_rows)
    n_blocks = max(1, n_keep // BLOCK_ROWS)
    starts = np.linspace(0, n_rows - BLOCK_ROWS, n_blocks).round().astype(int)
    rows = np.unique((starts[:, None] + np.arange(BLOCK_ROWS)[None, :]).ravel())
    return rows[rows < n_rows][:n_keep]


def _significance(
    sae: SparseAutoencoder,
    codes: Codes,
    fires: sp.csr_matrix,
    excluded: np.ndarray,
    labels: np.ndarray,
    finder,
    cfg: AtlasConfig,
    source: DictionarySource | None,
    progress: bool = False,
) -> list[NullTest]:
    if not cfg.nulls or cfg.n_null == 0:
        return []
    rows = _subsample(codes.n_rows, cfg.null_rows)
    sub, samples = fires[rows], codes.samples[rows]
    real = _graph(sub, samples, cfg).adjacency
    n_edges = real.nnz // 2  # null graphs are built as dense as the real one

    def fit(g: sp.spmatrix) -> tuple[float, np.ndarray]:
        f = clone(finder).fit(g)
        return float(f.modularity_), f.labels_

    def dictionary_graph(rng: np.random.Generator) -> sp.spmatrix:
        synthetic = dictionary_null_codes(
            sae,
            source.sae,
            source.codes[rows],
            source.residual_std,
            rng,
            together=source.together,
            batch_size=cfg.batch_size,
            device=cfg.device,
        )
        fires = drop_columns(strong_firing(synthetic, cfg.min_activation), excluded)
        return _graph(fires, samples, cfg, n_edges).adjacency

    makers = {
        "permutation": lambda rng: _graph(permute_codes(sub, rng), samples, cfg, n_edges).adjacency,
        "rewiring": lambda rng: rewire(real, rng),
        "dictionary": dictionary_graph,
    }
    tests = []
    with progress_bar("null models", len(cfg.nulls) * cfg.n_null, progress) as bar:
        for k, name in enumerate(cfg.nulls):
            seeds = np.random.SeedSequence([cfg.seed, k]).spawn(cfg.n_null)
            make = makers[name]
            tests.append(
                null_test(
                    name,
                    real,
                    labels,
                    fit,
                    lambda i, make=make, seeds=seeds: make(np.random.default_rng(seeds[i])),
                    cfg.n_null,
                    on_draw=bar.advance,
                )
            )
            log.info("null %s: z %.2f p %.3g", name, tests[-1].z, tests[-1].p)
    return tests


def _cross_check(
    codes: Codes, corr: np.ndarray | None, unit_module: np.ndarray, cfg: AtlasConfig
) -> dict:
    """The units' own cleaned correlation graph, partitioned by Leiden."""
    if corr is None:
        return {"labels": np.full(unit_module.shape, -1), "ari": None, "ami": None}
    g = unit_correlation_graph(corr, codes.n_rows, clean=True)
    labels = LeidenModules(cfg.resolutions, 2, cfg.seed).fit(g).labels_
    return {
        "labels": labels,
        "method": "leiden on unit correlations without the global mode and noise bulk",
        "n_modules": int(labels.max() + 1) if labels.size else 0,
        "ari": float(adjusted_rand_score(unit_module, labels)),
        "ami": float(adjusted_mutual_info_score(unit_module, labels)),
    }
