"""Whether a module of correlated units co-fires on its own account or only through
the mode every unit shares.

Units driven by one shared factor correlate in proportion to their loadings on it,
``c_ij = l_i l_j`` (Spearman's one-factor model). Units whose own variance is
small and whose loading is large therefore correlate strongly with each other and
form a reproducible, significant group of the raw correlations without being a
module: on ``blocks`` data with 8 modules (``bench/planted_variants.py``) the
free units, correlated 0.49 among themselves and 0.17 with the rest, were a ninth
module at p < 1e-6 against units made independent, and cleaning the correlations
(the largest eigenvalue removed) left them a mean correlation of 0.18, since the
strong modules pull the largest eigenvector away from the loadings.

:func:`own_share` asks each module the question directly: fit the one-factor model
to the correlations of every pair of units *not* in one module (so no module's own
co-firing enters the loadings), with loadings of one sign (a mode every unit
shares moves them all the same way; a signed factor is an axis, which "explains"
a module by its anti-correlated other pole), predict the mean correlation within
each module from the loadings, and report the part of the observed mean that the
prediction leaves (1: all of it the module's own, 0: all of it the shared
factor's). On that data the free units keep none of their correlation (-0.06) and the
planted modules 0.93-0.95. A module keeping less than :data:`OWN_SHARE` is the
shared mode seen through its most loaded units, not a module (the cut sits well
above what sampling leaves a group the factor alone makes, and below modules that
share a strong mode: two modules correlated 0.5 within and 0.3 with each other
keep 0.4).

The question is asked only where the units have a global mode
(:func:`..graph.units.global_mode`, the test that sets the SAE's global-mode
features aside): without one, the factor the fit finds is shared by some modules
only, and two modules that fire together (the sub-modules of a coarser one) are
not told from a mode: on the digits demo, whose units have no global mode, one of
its three modules kept 0.23-0.77 of its correlation over three analysis seeds.
"""

from __future__ import annotations

import numpy as np

from .cohesion import community_sizes

#: The share of its mean within-module correlation a module must keep beyond the
#: shared factor's prediction.
OWN_SHARE = 0.25

#: Ridge on the loadings, relative to a unit's count of fitted pairs: where the pairs
#: outside modules do not fix the loadings' scale (two modules and no unit outside
#: them fix only the products ``l_a l_b``), it picks the balanced solution, which
#: predicts each module's within-correlation at its correlation with the other.
RIDGE = 1e-3


def one_factor_loadings(
    corr: np.ndarray, labels: np.ndarray, iterations: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """``(loadings, fitted)`` ``[n_units]`` each: the one-factor loadings ``l`` that best
    fit ``corr`` (least squares) on the pairs of distinct units not both in one module
    of ``labels`` (-1: in none), by alternating least squares with a small ridge
    (:data:`RIDGE`); ``fitted`` is False for units without such a pair."""
    labels = np.asarray(labels)
    n = labels.size
    outside = corr.astype(np.float64, copy=True)
    np.fill_diagonal(outside, 0.0)
    n_mod = int(labels.max(initial=-1)) + 1
    for k in range(n_mod):
        idx = np.flatnonzero(labels == k)
        outside[np.ix_(idx, idx)] = 0.0
    # per unit, the units it is fitted against: all others but its own module's
    size = community_sizes(labels)
    own = np.where(labels >= 0, size[labels.clip(0)], 1)
    n_pairs = n - own
    fitted = n_pairs > 0
    ridge = RIDGE * max(float(np.median(n_pairs[fitted])) if fitted.any() else 1.0, 1.0)
    start = outside.sum(axis=1) / np.maximum(n_pairs, 1)
    loadings = np.sqrt(np.clip(start, 1e-6, None))
    for _ in range(iterations):
        sq = loadings**2
        # sum of l_j^2 over the units each is fitted against
        in_module = np.bincount(labels[labels >= 0], weights=sq[labels >= 0], minlength=n_mod)
        against = sq.sum() - np.where(labels >= 0, in_module[labels.clip(0)], sq)
        # a mode all units share moves them the same way: loadings of one sign (a signed
        # factor is an axis, and explains a module by its anti-correlated other pole)
        new = np.maximum(outside @ loadings, 0.0) / (against + ridge)
        done = np.abs(new - loadings).max() < 1e-10
        loadings = new
        if done:
            break
    return loadings, fitted


def own_share(corr: np.ndarray, labels: np.ndarray, unsigned: bool = False) -> np.ndarray:
    """``[n_modules]`` for each module of ``labels`` (-1: in none), the part of the mean
    correlation between its units that the one-factor model of the correlations outside
    modules (:func:`one_factor_loadings`) does not predict: ``(C - P) / C``, ``C`` the
    observed mean, ``P`` the predicted one. 0 where ``C`` is not positive (no
    co-firing at all); 1 where the model cannot be fitted (a module of fewer than two
    units, or one with no unit outside it to fit against). With ``unsigned`` (modules
    of squared correlations, whose units may rise and fall against each other and
    average a correlation near 0): the mean of ``(c - l_i l_j)^2`` over the mean of
    ``c^2``, the share of the squared correlations the factor leaves (on the ten
    units held by the mode of ``tests/structure/test_shared_mode.py``, 0.003-0.016;
    its four blocks 0.71-0.81)."""
    labels = np.asarray(labels)
    n_mod = int(labels.max(initial=-1)) + 1
    out = np.ones(n_mod)
    if n_mod == 0:
        return out
    loadings, fitted = one_factor_loadings(corr, labels)
    for k in range(n_mod):
        idx = np.flatnonzero(labels == k)
        m = idx.size
        if m < 2 or not fitted[idx].all():
            continue
        block = corr[np.ix_(idx, idx)]
        l = loadings[idx]
        if unsigned:  # the share of the squared correlations the factor leaves
            off = ~np.eye(m, dtype=bool)
            observed = float((block[off] ** 2).mean())
            left = float(((block - np.outer(l, l))[off] ** 2).mean())
            out[k] = left / observed if observed > 0 else 0.0
            continue
        observed = (block.sum() - np.trace(block)) / (m * (m - 1))
        predicted = (l.sum() ** 2 - (l**2).sum()) / (m * (m - 1))
        out[k] = (observed - predicted) / observed if observed > 0 else 0.0
    return out


def absorbs_mode_groups(labels: list[np.ndarray], shares: list[np.ndarray]) -> list[bool]:
    """For each scale's labels (coarsest first), whether it puts a group that a finer
    scale shows co-firing only through the global mode (its :func:`own_share`, in
    ``shares``, one array per scale, under :data:`OWN_SHARE`) into a module of its own
    account: most of the group's units in one module that keeps its share. Such a
    coarse level is no coarser level of the modules but a module with the mode's units
    added (on four blocks and ten units held by the mode alone,
    ``tests/structure/test_shared_mode.py``, the unsigned graph's coarser scale joined
    the ten to one block, which then kept 0.41)."""
    out = []
    for i, coarse in enumerate(labels):
        hit = False
        for fine, share in zip(labels[i + 1 :], shares[i + 1 :]):
            for k in np.flatnonzero(share < OWN_SHARE):
                held = coarse[fine == k]
                held = held[held >= 0]
                if held.size * 2 < (fine == k).sum():
                    continue  # most of the group is in no module at this scale
                top = np.bincount(held).argmax()
                hit |= bool(
                    (held == top).sum() * 2 >= (fine == k).sum() and shares[i][top] >= OWN_SHARE
                )
        out.append(hit)
    return out
