"""The 2-D map of the features: coordinates of every decoder direction for the
report (UMAP, McInnes et al. 2018, on cosine distance when ``umap-learn`` is
installed; PCA otherwise)."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.decomposition import PCA

from ..._linalg import unit_rows
from .directions import decoder_rows

log = logging.getLogger(__name__)

#: The map methods by the name `AtlasConfig.map_method` takes (each a branch of
#: :func:`feature_map`).
MAP_METHODS = ("umap", "pca")


def feature_map(
    W_dec,
    *,
    method: str = "umap",
    random_state: int | None = 0,
    max_points: int | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> np.ndarray:
    """2-D coordinates ``[d_sae, 2]`` of every feature's decoder direction.

    - ``umap``: UMAP (McInnes et al. 2018) with the cosine metric, from the
      optional ``umap-learn`` (``pip install 'saeatlas[umap]'``); without it, PCA
      with a logged warning.
    - ``pca``: the top two principal components of the unit-normalised rows
      (scikit-learn's ``PCA``, seeded with ``random_state``).

    Args:
        W_dec: decoder ``[d_sae, d_in]``.
        method: ``umap`` or ``pca``.
        random_state: seed (UMAP then runs single-threaded, so it is reproducible).
        max_points: fit on this many random features and place the rest with the
            fitted map's ``transform`` (UMAP at large ``d_sae``); default: all.
        n_neighbors, min_dist: UMAP's settings.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"Unknown `method` {method!r}; expected one of: {list(MAP_METHODS)}.")
    if max_points is not None and max_points < 2:
        raise ValueError(f"`max_points` must be at least 2 (or None), got {max_points}.")
    X = unit_rows(decoder_rows(W_dec))
    n = X.shape[0]
    fit_idx = np.arange(n)
    if max_points is not None and max_points < n:
        fit_idx = np.sort(np.random.default_rng(random_state).choice(n, max_points, replace=False))
    if method == "umap":
        try:
            import umap
        except ImportError:
            log.warning(
                "umap-learn is not installed; the feature map falls back to PCA. "
                "Install it with `pip install 'saeatlas[umap]'`."
            )
            method = "pca"
    if method == "umap" and fit_idx.size > 3:  # UMAP needs a few neighbours; PCA below
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(n_neighbors, fit_idx.size - 1),
            min_dist=min_dist,
            metric="cosine",
            random_state=random_state,
            n_jobs=1,
        )
        return _fit_transform(reducer, X, fit_idx)
    n_comp = min(2, n, X.shape[1])
    if n_comp < 1 or fit_idx.size < 2:
        return np.zeros((n, 2))
    coords = _fit_transform(PCA(n_components=n_comp, random_state=random_state), X, fit_idx)
    return np.pad(coords, ((0, 0), (0, 2 - n_comp)))


def _fit_transform(reducer, X: np.ndarray, fit_idx: np.ndarray) -> np.ndarray:
    """Fit on ``X[fit_idx]``; place the other rows with ``transform``."""
    out = np.zeros((X.shape[0], 2))
    if fit_idx.size == X.shape[0]:
        return np.asarray(reducer.fit_transform(X), dtype=np.float64)
    out[fit_idx] = reducer.fit_transform(X[fit_idx])
    rest = np.setdiff1d(np.arange(X.shape[0]), fit_idx)
    out[rest] = reducer.transform(X[rest])
    return out
