"""How one partition of units sits in the correlation view: its modularity with the
units it leaves out standing alone, and how strongly two of its modules oppose each
other (the two sides of one axis of the units' activity, not two modules)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..graph.finders import modularity


def partition_modularity(graph: sp.spmatrix, labels: np.ndarray) -> float:
    """Modularity of ``labels`` on ``graph``, units in no module each a module of their
    own (so leaving units out neither raises nor lowers it by itself)."""
    alone = labels < 0
    full = labels.copy()
    full[alone] = int(labels.max(initial=-1)) + 1 + np.arange(int(alone.sum()))
    return modularity(graph, full)


def opposition(corr: np.ndarray, labels: np.ndarray, unsigned: bool = False) -> float:
    """How strongly the most anti-correlated pair of modules of ``labels`` opposes each
    other in ``corr [n_units, n_units]``: the largest ``-B_ab / sqrt(W_a W_b)`` over pairs
    of modules, ``B_ab`` the mean correlation between their units, ``W_a`` the mean
    correlation within ``a`` (0: no pair anti-correlated; 1: the two sides of one axis,
    correlated within as strongly as against each other). 0 with fewer than two
    modules. ``unsigned`` (modules of squared correlations, whose units may rise as
    others fall): ``W_a`` the mean absolute correlation within (a module holding both
    sides of an axis averages a correlation near 0 within, and any pair with it read as
    opposed by a factor of 10^5 on the digits demo)."""
    on = np.flatnonzero(labels >= 0)
    _, module = np.unique(labels[on], return_inverse=True)  # modules without units dropped
    n_mod = int(module.max(initial=-1)) + 1
    if n_mod < 2:
        return 0.0
    member = sp.csr_matrix(
        (np.ones(on.size), (on, module)), shape=(labels.size, n_mod)
    )  # [n_units, n_mod] one-hot
    sums = np.asarray(member.T @ (member.T @ corr).T)  # [n_mod, n_mod] summed correlations
    size = np.bincount(module, minlength=n_mod).astype(np.float64)
    diag = np.bincount(module, weights=np.diag(corr)[on], minlength=n_mod)
    inside = np.diag(sums)
    if unsigned:
        inside = np.asarray(member.T @ (member.T @ np.abs(corr)).T).diagonal()
    within = (inside - diag) / np.maximum(size * (size - 1), 1)
    between = sums / np.outer(size, size)
    within = within.clip(1e-12)  # a module not correlated within: any opposition is large
    scale = np.sqrt(np.outer(within, within))
    ratio = -between / scale
    np.fill_diagonal(ratio, -np.inf)
    return float(max(ratio.max(), 0.0))
