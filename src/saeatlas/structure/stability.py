"""Are the atlas's modules stable? Bootstrap of rows, other SAE seeds, and their control.

A module that is a property of the network should come back when the data are
resampled and when the SAE is trained again with another seed.

- **Bootstrap** (same SAE): rows are drawn with replacement (contiguous blocks
  of rows when co-occurrence is counted in token windows, so windows stay whole;
  the moving-block bootstrap of Kuensch 1989) and the atlas's feature
  communities and their unit projection (steps 2-4 of ``map_structure``) are
  computed again. Feature labels of one SAE are comparable across resamples.
- **Seeds** (other SAEs trained on the same store): their dictionaries differ,
  so feature labels are not comparable (Paulo & Belrose 2025), but unit labels
  are: the units are the same. Modules are compared as modules of units, and
  the dictionaries themselves by Hungarian-matched decoder cosine.

A module's stability is its best-match Jaccard (Hennig 2007): the largest
Jaccard similarity between its members and any module of the other run,
averaged over runs; at least 0.75 is stable, below 0.5 dissolved. The control
is the no-structure twin of planted data (``PlantedConfig.preset("null")``):
modules found there should not all be stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score

from .._progress import progress_bar
from ..errors import ConfigError, ShapeError
from ..sae import SparseAutoencoder
from ..store import ActivationStore
from .atlas import Atlas
from .codes import Codes, encode_store, strong_firing
from .config import AtlasConfig
from .finders import LeidenModules, relabel
from .mapping import BLOCK_ROWS, drop_columns, feature_communities, map_structure
from .matching import match_features
from .units import attribution, project_modules

#: Hennig 2007, Section 4: "valid, stable clusters" from 0.75, "dissolved" at or below 0.5.
STABLE_JACCARD = 0.75
DISSOLVED_JACCARD = 0.5
#: Settings that change the feature communities; the atlas and the bootstrap must share them.
COMMUNITY_FIELDS = (
    "min_activation",
    "max_density",
    "global_mode_cosine",
    "affinity",
    "window",
    "edge_alpha",
    "method",
    "resolutions",
    "min_module_features",
    "min_link_fraction",
    "min_enrichment",
    "max_rows",
    "seed",
)

# ---------------------------------------------------------------- partitions


def partition_ari(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings of the same items (-1: in no module).

    Only items in a module in at least one run are compared: the many items no
    run assigns would otherwise agree trivially and inflate the index. An item
    with -1 in one run counts as a singleton there ("no module" is not a shared
    module). NaN when fewer than two items are assigned.
    """
    a, b = _labels(labels_a, "labels_a"), _labels(labels_b, "labels_b")
    if a.shape != b.shape:
        raise ShapeError(f"The labelings differ in length: {a.shape} and {b.shape}.")
    on = (a >= 0) | (b >= 0)
    if on.sum() < 2:
        return float("nan")
    return float(adjusted_rand_score(_singletons(a[on]), _singletons(b[on])))


def _labels(labels, name: str) -> np.ndarray:
    x = np.asarray(labels)
    if x.ndim != 1:
        raise ShapeError(f"`{name}` must be 1-D (one label per item), got shape {x.shape}.")
    return x.astype(np.int64)


def _singletons(x: np.ndarray) -> np.ndarray:
    """-1 entries become distinct new labels."""
    out = x.copy()
    free = x < 0
    out[free] = max(int(x.max()), -1) + 1 + np.arange(int(free.sum()))
    return out


def best_match_jaccard(reference_labels, other_labels, *, n_modules: int | None = None):
    """``[n_modules]``: each reference module's largest Jaccard with any module of the other run.

    Hennig 2007 ("Cluster-wise assessment of cluster stability", Comput. Stat.
    Data Anal. 52) measures a cluster's stability as the Jaccard similarity
    ``|C ∩ D| / |C ∪ D|`` with the most similar cluster ``D`` of a rerun,
    averaged over reruns. ``other_labels`` is one labeling ``[n_items]`` or
    several ``[n_runs, n_items]`` (the mean over runs). A module the other run
    does not recover at all scores 0; a reference module without members
    (``n_modules`` larger than the labels show) is NaN.
    """
    ref = _labels(reference_labels, "reference_labels")
    runs = np.asarray(other_labels)
    runs = runs[None] if runs.ndim == 1 else runs
    if runs.ndim != 2 or runs.shape[1] != ref.size:
        raise ShapeError(
            f"`other_labels` must be [n_items] or [n_runs, n_items] with n_items = "
            f"{ref.size}, got shape {np.shape(other_labels)}."
        )
    n_ref = int(ref.max(initial=-1)) + 1 if n_modules is None else int(n_modules)
    size_r = np.bincount(ref[ref >= 0], minlength=n_ref)[:n_ref]
    total = np.zeros(n_ref)
    for other in runs.astype(np.int64):
        n_o = int(other.max(initial=-1)) + 1
        both = (ref >= 0) & (other >= 0) & (ref < n_ref)
        inter = sp.coo_matrix(
            (np.ones(int(both.sum())), (ref[both], other[both])), shape=(n_ref, max(n_o, 1))
        ).tocsr()
        inter.sum_duplicates()
        coo = inter.tocoo()
        size_o = np.bincount(other[other >= 0], minlength=max(n_o, 1))
        j = coo.data / (size_r[coo.row] + size_o[coo.col] - coo.data)
        best = np.zeros(n_ref)
        np.maximum.at(best, coo.row, j)
        total += best
    out = total / len(runs) if len(runs) else np.full(n_ref, np.nan)
    return np.where(size_r > 0, out, np.nan)


def stability_verdict(j):
    """'stable' (Jaccard >= 0.75), 'dissolved' (< 0.5) or 'unclear' (between, or NaN),
    after Hennig 2007; a scalar gives a string, an array an array of strings."""
    arr = np.asarray(j, dtype=np.float64)
    out = np.where(
        arr >= STABLE_JACCARD, "stable", np.where(arr < DISSOLVED_JACCARD, "dissolved", "unclear")
    ).astype(object)
    return str(out) if out.ndim == 0 else out


def consensus_partition(
    label_runs,
    min_fraction: float = 0.5,
    *,
    min_size: int = 2,
    method: str = "components",
    random_state: int | None = None,
    max_entries: int = 1 << 24,
) -> np.ndarray:
    """Items that are in one module in at least ``min_fraction`` of the runs, grouped.

    The co-assignment matrix (Monti et al. 2003, consensus clustering) counts for
    each pair of items the runs that put both in one module. It is built only over
    items in a module in some run, as a sparse product of per-run one-hot
    matrices, by blocks of rows sized so that no block holds more than
    ``max_entries`` products; each block keeps only the pairs at or above the
    threshold. Its partition: connected components of the thresholded graph
    (``method='components'``), or Leiden on it, weighted by the fraction
    (``'leiden'``). Returns ``[n_items]`` labels, -1 for items never consistently
    assigned (no partner above the threshold, or a group smaller than ``min_size``).
    """
    runs = np.asarray(label_runs)
    if runs.ndim != 2 or runs.shape[0] == 0:
        raise ShapeError(
            f"`label_runs` must be [n_runs, n_items] labelings, got shape {runs.shape}."
        )
    if not 0 < min_fraction <= 1:
        raise ConfigError(f"`min_fraction` must be in (0, 1], got {min_fraction}.")
    if method not in ("components", "leiden"):
        raise ConfigError(
            f"Unknown `method` {method!r}; expected one of: ['components', 'leiden']."
        )
    runs = runs.astype(np.int64)
    n_runs, n_items = runs.shape
    active = np.flatnonzero((runs >= 0).any(axis=0))
    labels = np.full(n_items, -1, dtype=np.int64)
    if active.size < 2:
        return labels
    item, module, offset = [], [], 0
    for run in runs[:, active]:  # one-hot of every run's modules, side by side
        on = np.flatnonzero(run >= 0)
        item.append(on)
        module.append(run[on] + offset)
        offset += int(run.max()) + 1 if on.size else 0
    item, module = np.concatenate(item), np.concatenate(module)
    M = sp.csr_matrix((np.ones(item.size, np.float32), (item, module)), shape=(active.size, offset))
    need = math.ceil(min_fraction * n_runs - 1e-9)
    graph = _coassignment(M, need, max_entries) / n_runs
    if method == "components":
        part = connected_components(graph, directed=False)[1]
        part = np.where(np.diff(graph.indptr) > 0, part, -1)
    else:
        part = LeidenModules((1.0,), min_size, random_state).fit(graph).labels_
    labels[active] = relabel(part, min_size)
    return labels


def _coassignment(M: sp.csr_matrix, need: int, max_entries: int) -> sp.csr_matrix:
    """``M M^T`` with the diagonal and entries below ``need`` dropped, by row blocks."""
    sizes = np.asarray(M.sum(axis=0)).ravel()
    cost = np.cumsum(M @ sizes)  # products each row's block of M M^T holds
    parts, start = [], 0
    while start < M.shape[0]:
        stop = int(np.searchsorted(cost, (cost[start - 1] if start else 0) + max_entries, "right"))
        stop = max(stop, start + 1)
        C = (M[start:stop] @ M.T).tocsr()
        C.data[C.data < need] = 0
        C.setdiag(0, k=start)  # an item with itself
        C.eliminate_zeros()
        parts.append(C)
        start = stop
    return sp.csr_matrix(sp.vstack(parts))


# ---------------------------------------------------------------- the atlas


@dataclass(frozen=True)
class StabilityResult:
    """How well the atlas's modules survive resampled rows and other SAE seeds."""

    module_jaccard: np.ndarray
    """``[n_modules]`` mean best-match Jaccard of each module's features over bootstraps."""
    module_unit_jaccard: np.ndarray
    """``[n_modules]`` mean best-match Jaccard of each module's units over seed SAEs
    (NaN without seeds, or for a module with no units)."""
    module_stability: np.ndarray
    """``[n_modules]`` :func:`stability_verdict` of the worse of the two Jaccards."""
    bootstrap_ari: list[float]
    """Feature-module ARI of each bootstrap with the atlas."""
    bootstrap_unit_ari: list[float]
    """Unit-module ARI of each bootstrap with the atlas."""
    seed_unit_ari: list[float]
    """Unit-module ARI of each seed SAE's atlas with this one."""
    feature_match_cosine: list[float]
    """Mean Hungarian-matched decoder cosine with each seed SAE (units standardised)."""
    consensus_labels: np.ndarray
    """``[d_sae]`` consensus feature modules of the atlas and its bootstraps (-1 none)."""
    feature_stability: np.ndarray
    """``[d_sae]`` fraction of bootstraps in which a feature stays with the bootstrap
    module holding the majority of its module's members (NaN: in no module)."""
    feature_match_method: list[str] = field(default_factory=list)
    """How each seed's dictionary was matched (:class:`FeatureMatch` ``method``)."""

    def summary(self) -> dict[str, Any]:
        """The stability block of ``atlas.json`` (NaN written as null)."""
        verdicts = list(self.module_stability)
        consensus = self.consensus_labels
        return {
            "n_bootstrap": len(self.bootstrap_ari),
            "n_seeds": len(self.seed_unit_ari),
            "n_stable_modules": verdicts.count("stable"),
            "n_dissolved_modules": verdicts.count("dissolved"),
            "module_stability": verdicts,
            "module_jaccard": _json_floats(self.module_jaccard),
            "module_unit_jaccard": _json_floats(self.module_unit_jaccard),
            "bootstrap_ari": _json_floats(self.bootstrap_ari),
            "bootstrap_unit_ari": _json_floats(self.bootstrap_unit_ari),
            "seed_unit_ari": _json_floats(self.seed_unit_ari),
            "feature_match_cosine": _json_floats(self.feature_match_cosine),
            "feature_match_method": list(self.feature_match_method),
            "n_consensus_modules": int(consensus.max(initial=-1)) + 1,
            "mean_feature_stability": _json_floats([_nanmean(self.feature_stability)])[0],
            "thresholds": {"stable": STABLE_JACCARD, "dissolved": DISSOLVED_JACCARD},
            "method": "best-match Jaccard (Hennig 2007) over row bootstraps (features) and "
            "SAE seeds (units); dictionaries matched by Hungarian decoder cosine "
            "(Paulo & Belrose 2025)",
        }


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _json_floats(x) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=np.float64)]


def module_stability(
    sae: SparseAutoencoder | str | Path,
    store: ActivationStore | str | Path,
    atlas: Atlas,
    config: AtlasConfig | None = None,
    *,
    seeds_saes: Sequence[SparseAutoencoder | str | Path] = (),
    n_bootstrap: int = 3,
    random_state: int = 0,
    progress: bool = False,
) -> StabilityResult:
    """Bootstrap and seed stability of the modules of ``atlas = map_structure(sae, store, config)``.

    The store is encoded once; each of ``n_bootstrap`` resamples of its rows gets
    the atlas's feature communities and unit projection again (the features kept
    out of modules, dense or on the global mode, are the atlas's; unit scales and
    firing cuts are those of all rows). Each SAE in ``seeds_saes`` (trained with
    another seed on the same store) gets its own atlas without null models, and
    its modules of units are compared with these. ``config`` defaults to the one
    the atlas was made with (``atlas.summary["config"]``).
    """
    made = atlas.summary.get("config")
    cfg = config or (AtlasConfig.from_json(made) if made is not None else AtlasConfig())
    sae = sae if isinstance(sae, SparseAutoencoder) else SparseAutoencoder.load(sae)
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    _check_atlas(sae, atlas, cfg)
    if n_bootstrap < 0:
        raise ConfigError(f"`n_bootstrap` must be >= 0, got {n_bootstrap}.")
    ref_f = atlas.features["module"].to_numpy().astype(np.int64)
    ref_u = atlas.units["module"].to_numpy().astype(np.int64)
    n_modules = int(ref_f.max(initial=-1)) + 1
    codes = encode_store(
        sae,
        store,
        max_rows=cfg.max_rows,
        batch_size=cfg.batch_size,
        device=cfg.device,
        unit_gram=False,
        progress=progress,
    )
    excluded = atlas.features["dense"].to_numpy(bool) | atlas.features["global_mode"].to_numpy(bool)
    fires = drop_columns(strong_firing(codes.matrix, cfg.min_activation), excluded)
    rng = np.random.default_rng(random_state)
    boot_f, boot_u = [], []
    seed_u, cosines, methods = [], [], []
    std = np.where(codes.unit_std > 0, codes.unit_std, 1.0)[None, :]
    W = sae.W_dec.detach().double().cpu().numpy() / std
    runs = n_bootstrap + len(seeds_saes)
    with progress_bar("stability (resamples, seeds)", runs, progress and runs > 0) as bar:
        for _ in range(n_bootstrap):
            rows, samples = bootstrap_rows(codes.samples, cfg.window, rng)
            f, u = modules_on_rows(sae, codes, fires, rows, samples, cfg)
            boot_f.append(f)
            boot_u.append(u)
            bar.advance()
        for other in seeds_saes:
            other = other if isinstance(other, SparseAutoencoder) else SparseAutoencoder.load(other)
            other_atlas = map_structure(
                other, store, replace(cfg, nulls=(), n_bootstrap=0, n_examples=0)
            )
            seed_u.append(other_atlas.units["module"].to_numpy().astype(np.int64))
            match = match_features(W, other.W_dec.detach().double().cpu().numpy() / std)
            cosines.append(match.mean_cosine)
            methods.append(match.method)
            bar.advance()

    nan = np.full(n_modules, np.nan)
    jf = best_match_jaccard(ref_f, boot_f, n_modules=n_modules) if boot_f else nan
    ju = best_match_jaccard(ref_u, seed_u, n_modules=n_modules) if seed_u else nan
    worst = np.fmin(jf, ju)  # the worse of the two; NaN only when both are
    return StabilityResult(
        module_jaccard=jf,
        module_unit_jaccard=ju,
        module_stability=stability_verdict(worst).reshape(n_modules),
        bootstrap_ari=[partition_ari(ref_f, f) for f in boot_f],
        bootstrap_unit_ari=[partition_ari(ref_u, u) for u in boot_u],
        seed_unit_ari=[partition_ari(ref_u, u) for u in seed_u],
        feature_match_cosine=cosines,
        consensus_labels=consensus_partition(
            [ref_f, *boot_f], 0.5, min_size=cfg.min_module_features
        ),
        feature_stability=feature_stability(ref_f, boot_f),
        feature_match_method=methods,
    )


def _check_atlas(sae: SparseAutoencoder, atlas: Atlas, cfg: AtlasConfig) -> None:
    if len(atlas.features) != sae.cfg.d_sae or len(atlas.units) != sae.cfg.d_in:
        raise ShapeError(
            f"The atlas has {len(atlas.features)} features and {len(atlas.units)} units, the SAE "
            f"{sae.cfg.d_sae} latents over {sae.cfg.d_in} units: pass the atlas made with this SAE."
        )
    for col in ("module", "dense", "global_mode"):
        if col not in atlas.features.columns:
            raise ShapeError(
                f"The atlas's features table has no `{col}` column; rerun `saeatlas analyze`."
            )
    made = atlas.summary.get("config")
    if made is None:
        return
    made = AtlasConfig.from_json(made)
    differ = [n for n in COMMUNITY_FIELDS if getattr(made, n) != getattr(cfg, n)]
    if differ:
        raise ConfigError(
            f"The atlas was made with other settings of {differ} (e.g. `{differ[0]}` "
            f"{getattr(made, differ[0])!r}, here {getattr(cfg, differ[0])!r}); pass the "
            "config the atlas was made with (`AtlasConfig.from_json(atlas.summary['config'])`)."
        )


def bootstrap_rows(
    samples: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One bootstrap resample of ``n = len(samples)`` rows: ``(rows, samples)``.

    ``window == 0``: rows drawn independently with replacement. Otherwise a
    moving-block bootstrap (Kuensch 1989): blocks of ``BLOCK_ROWS`` consecutive
    rows with random starts, so token windows stay whole; every drawn block gets
    its own sample ids, so a sample's rows stay contiguous as windows require.
    """
    n = len(samples)
    if window == 0:
        rows = rng.integers(0, n, n)
        return rows, samples[rows]
    b = min(BLOCK_ROWS, n)
    starts = rng.integers(0, n - b + 1, -(-n // b))
    rows = (starts[:, None] + np.arange(b)[None, :]).ravel()[:n]
    draw = np.arange(rows.size) // b
    key = draw * (int(samples.max(initial=0)) + 1) + samples[rows].astype(np.int64)
    return rows, np.unique(key, return_inverse=True)[1].reshape(-1)


def modules_on_rows(
    sae: SparseAutoencoder,
    codes: Codes,
    fires: sp.csr_matrix,
    rows: np.ndarray,
    samples: np.ndarray,
    cfg: AtlasConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature and unit modules (``[d_sae]``, ``[n_units]``; -1 none) from the given rows,
    with the calls ``map_structure`` makes (co-occurrence graph, finder, core, projection).

    ``fires``: the strong firings of ``codes`` with excluded features dropped.
    ``samples``: the sample id of each of ``rows`` (used when ``cfg.window > 0``).
    """
    _, _, labels = feature_communities(fires[rows], samples, cfg)
    n_modules = int(labels.max(initial=-1)) + 1
    raw = codes.matrix[rows]
    d = codes.d_sae
    resampled = replace(
        codes,
        matrix=raw,
        rows=codes.rows[rows],
        samples=samples,
        act_sum=np.bincount(raw.indices, weights=raw.data, minlength=d),
        act_sq_sum=np.bincount(raw.indices, weights=raw.data.astype(np.float64) ** 2, minlength=d),
    )
    units = project_modules(attribution(sae, resampled), labels, n_modules, cfg.min_enrichment)
    return labels, units.module.astype(np.int64)


def feature_stability(reference_labels, runs) -> np.ndarray:
    """``[n_items]``: fraction of ``runs`` in which an item is in the run's module that
    holds more than half of its reference module's members (NaN: in no reference module)."""
    ref = _labels(reference_labels, "reference_labels")
    out = np.full(ref.size, np.nan)
    on = ref >= 0
    if not len(runs) or not on.any():
        return out
    n_ref = int(ref.max()) + 1
    size = np.bincount(ref[on], minlength=n_ref)
    stays = np.zeros(ref.size)
    for run in np.asarray(runs, dtype=np.int64):
        both = on & (run >= 0)
        n_o = int(run.max(initial=-1)) + 1
        table = sp.csr_matrix(
            (np.ones(int(both.sum())), (ref[both], run[both])), shape=(n_ref, max(n_o, 1))
        )
        table.sum_duplicates()
        major = np.asarray(table.argmax(axis=1)).ravel()
        count = table.max(axis=1).toarray().ravel()
        ok = count > size / 2
        stays += on & (run == major[ref.clip(0)]) & ok[ref.clip(0)]
    out[on] = stays[on] / len(runs)
    return out
