"""Clusters of SAE features by the direction they write: spherical k-means on the
unit-normalised decoder rows ``W_dec [d_sae, d_in]`` (Dhillon & Modha 2001: assign by
cosine, centroids renormalised to the sphere). :mod:`.geometry` compares them with the
co-occurrence modules.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..._linalg import unit_rows
from ..graph.finders import relabel


def decoder_rows(W) -> np.ndarray:
    """``[d_sae, d_in]`` float64 array from a tensor or array."""
    if hasattr(W, "detach"):
        W = W.detach().cpu().double().numpy()
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"`W_dec` must be a [d_sae, d_in] matrix, got shape {W.shape}.")
    return W


def direction_clusters(
    W_dec,
    n_clusters: int | None = None,
    *,
    module_labels: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    n_init: int = 4,
    max_iter: int = 100,
    random_state: int | None = 0,
) -> np.ndarray:
    """Cluster decoder directions by angle: spherical k-means on unit-normalised rows.

    Args:
        W_dec: decoder ``[d_sae, d_in]`` (array or tensor).
        n_clusters: number of clusters; by default the number of co-occurrence
            modules in ``module_labels`` (so both partitions have as many parts).
        module_labels: ``[d_sae]`` co-occurrence modules (-1 none); only read for
            the default ``n_clusters``.
        mask: ``[d_sae]`` bool, the features to cluster (e.g. those that fire);
            the others, and zero rows, get -1.
        n_init: k-means++ restarts; the one with the highest summed cosine wins.
        max_iter: Lloyd iterations per restart.
        random_state: seed of the restarts.

    Returns:
        ``[d_sae]`` cluster labels, numbered by size (largest first), -1 for
        excluded features.

    Cost: ``n_init * iterations`` products ``[n, d_in] @ [d_in, n_clusters]``.
    """
    W = decoder_rows(W_dec)
    d_sae = W.shape[0]
    if n_clusters is None:
        if module_labels is None:
            raise ValueError(
                "Give `n_clusters`, or `module_labels` to use the number of co-occurrence modules."
            )
        labels = np.asarray(module_labels)
        n_clusters = int(np.unique(labels[labels >= 0]).size)
    if n_clusters < 1:
        raise ValueError(f"`n_clusters` must be positive, got {n_clusters}.")
    keep = np.ones(d_sae, bool) if mask is None else np.asarray(mask, bool).copy()
    if keep.shape != (d_sae,):
        raise ValueError(f"`mask` must have shape ({d_sae},), got {keep.shape}.")
    keep &= np.linalg.norm(W, axis=1) > 0
    idx = np.flatnonzero(keep)
    if idx.size < n_clusters:
        raise ValueError(
            f"Cannot make {n_clusters} clusters of {idx.size} features (nonzero rows in "
            "`mask`); lower `n_clusters`."
        )
    # float32: the products dominate the cost, and cosines need no more precision
    X = unit_rows(W[idx]).astype(np.float32)
    rng = np.random.default_rng(random_state)
    best, best_score = None, -np.inf
    for _ in range(max(1, n_init)):
        labels, score = _spherical_kmeans(X, n_clusters, rng, max_iter)
        if score > best_score + 1e-12:
            best, best_score = labels, score
    out = np.full(d_sae, -1, dtype=np.int64)
    out[idx] = best
    return relabel(out, 1)


def _spherical_kmeans(
    X: np.ndarray, k: int, rng: np.random.Generator, max_iter: int, tol: float = 1e-6
) -> tuple[np.ndarray, float]:
    """One run on unit rows ``X [n, d]``: ``(labels [n], summed cosine to the centroids)``.
    Stops when no label changes or the summed cosine gains less than ``tol`` (relative)."""
    n = X.shape[0]
    C = X[_kmeanspp(X, k, rng)]
    labels, score = np.full(n, -1), -np.inf
    for _ in range(max_iter):
        sim = X @ C.T
        new = sim.argmax(axis=1)
        new_score = float(sim[np.arange(n), new].sum())
        if np.array_equal(new, labels) or new_score - score <= tol * abs(new_score):
            labels, score = new, new_score
            break
        labels, score = new, new_score
        onehot = sp.csr_matrix((np.ones(n, X.dtype), (labels, np.arange(n))), shape=(k, n))
        C = np.asarray(onehot @ X)
        empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
        if empty.size:  # reseed with the points worst served by their centroid
            worst = np.argsort(sim[np.arange(n), labels])[: empty.size]
            C[empty] = X[worst]
        C = unit_rows(C)
    return labels, score


def _kmeanspp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (Arthur & Vassilvitskii 2007) with the chordal distance
    ``|x - c|^2 = 2 - 2 cos`` of unit vectors."""
    n = X.shape[0]
    seeds = [int(rng.integers(n))]
    d2 = np.maximum(2 - 2 * (X @ X[seeds[0]]).astype(np.float64), 0)
    for _ in range(1, k):
        total = d2.sum()
        j = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        seeds.append(j)
        d2 = np.minimum(d2, np.maximum(2 - 2 * (X @ X[j]).astype(np.float64), 0))
    return np.array(seeds)
