"""Comparing partitions of the same items across runs: ARI over the assigned items,
best-match Jaccard per module (Hennig 2007), per-item stability, and the consensus
of several runs (co-assignment, Monti et al. 2003)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score

from ...errors import ConfigError, ShapeError
from ..constants import DISSOLVED_JACCARD, STABLE_JACCARD
from ..graph.finders import LeidenModules, relabel

# ---------------------------------------------------------------- partitions


def partition_ari(labels_a, labels_b, score=adjusted_rand_score) -> float:
    """Adjusted Rand index (or another ``score`` of two labelings, such as
    ``adjusted_mutual_info_score``) of two labelings of the same items (-1: in no module).

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
    a, b = _singletons(a[on]), _singletons(b[on])
    return _rand_adjusted(a, b) if score is adjusted_rand_score else float(score(a, b))


def _rand_adjusted(a: np.ndarray, b: np.ndarray) -> float:
    """``adjusted_rand_score(a, b)`` for labels ``>= 0``, equal to scikit-learn's (the same
    pair counts, in integers, and the same final formula, Hubert & Arabie 1985) without
    its checks of the input: a consensus compares every pair of its members, hundreds of
    calls per scale."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    n_b = int(bi.max()) + 1
    cells, n_ij = np.unique(ai * n_b + bi, return_counts=True)
    n_c = np.bincount(ai)[cells // n_b]  # each cell's row total
    n_k = np.bincount(bi)[cells % n_b]  # and column total
    n = int(a.size)
    squares = int((n_ij**2).sum())
    tp = squares - n
    fp = int((n_ij * n_k).sum()) - squares
    fn = int((n_ij * n_c).sum()) - squares
    tn = n * n - fp - fn - squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


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
