"""From feature communities to modules of units, and the units' own co-activation graph.

- :func:`attribution`: how much each feature writes into each unit, as the
  activation-weighted energy ``E[f_i^2] (W_dec[i, u] / std_u)^2`` (decoder in
  standardised unit space, so a unit's scale cannot decide its module).
- :func:`project_modules`: a unit's module is, among the feature communities
  over-represented in it (their share of the unit's attributed energy over their
  share of all energy), the one that writes most of its energy; ``membership``
  is that community's part of what modules write into the unit (0-1), and a
  unit is ``shared`` when a second over-represented community writes at least
  half as much.
- :func:`unit_correlation_graph`: the units' correlation matrix with the
  global mode (largest eigenvalue) and the random-matrix noise bulk
  (eigenvalues under the Marchenko-Pastur edge, with the noise variance the
  signal leaves, Laloux et al. 1999) removed, after MacMahon &
  Garlaschelli 2015 ("Community detection for correlation matrices"); the
  positive part is the graph, or with ``unsigned`` the squares (the atlas's raw
  correlation view, :mod:`..inference.correlation`). ``clean=False`` keeps the raw
  correlations (the naive baseline); ``neighbours`` keeps each unit's strongest
  weights only (a k-nearest-neighbour graph, for thousands of units).

These are co-activation modules: units that are driven together, not a causal
claim (ablations are in part 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ...sae import SparseAutoencoder
from .codes import Codes, weighted_sq_sum
from .finders import onehot

#: Features whose attribution is computed at once (bounds the float64 temporaries).
ATTRIBUTION_FEATURES = 1 << 14


@torch.no_grad()
def attribution(sae: SparseAutoencoder, codes: Codes, rows: np.ndarray | None = None) -> np.ndarray:
    """``[d_sae, n_units]`` energy each feature writes into each unit, per row on average,
    with units standardised: ``E[f_i^2] (W_dec[i, u] / std_u)^2``.

    ``rows``: ``E[f_i^2]`` over these rows of the codes, with repeats (a bootstrap
    resample; :func:`.codes.weighted_sq_sum`, no copy of the codes); the units' std is
    that of all rows.

    Computed in torch where the decoder is (the analysis's device), in blocks of
    :data:`ATTRIBUTION_FEATURES` features written into the host result, so memory is
    the result and one block (a 262k-latent float64 decoder and its temporaries would
    be 0.8 GB each)."""
    W = sae.W_dec.detach()
    std = np.where(codes.unit_std > 0, codes.unit_std, 1.0)
    std = torch.from_numpy(std).to(W.device)
    if rows is None:
        sq, n = codes.act_sq_sum, codes.n_rows
    else:
        sq, n = weighted_sq_sum(codes.matrix, np.bincount(rows, minlength=codes.n_rows)), rows.size
    e2 = torch.from_numpy(sq / max(n, 1)).to(W.device)
    out = np.empty(tuple(W.shape), dtype=np.float64)
    for s in range(0, W.shape[0], ATTRIBUTION_FEATURES):
        sl = slice(s, s + ATTRIBUTION_FEATURES)
        out[sl] = (e2[sl, None] * (W[sl].double() / std[None, :]) ** 2).cpu().numpy()
    return out


@dataclass(frozen=True)
class UnitModules:
    """Each unit's module (-1 none), its membership strength and whether it is shared."""

    module: np.ndarray
    membership: np.ndarray
    shared: np.ndarray
    mass: np.ndarray
    """``[n_units, n_modules]`` share of each unit's attributed energy per module."""


def project_modules(
    attr: np.ndarray, feature_module: np.ndarray, n_modules: int, min_enrichment: float = 1.5
) -> UnitModules:
    """Project feature communities (``feature_module``, -1 none) onto units.

    Each module writes a share ``share_uc`` of every unit's attributed energy; over
    all units together it writes its overall share ``e_c``. A module is
    over-represented in a unit when its enrichment ``share_uc / e_c`` is at least
    ``min_enrichment`` (with features spread at random every enrichment is near 1).
    A unit joins, among the modules over-represented in it, the one that writes
    the largest share of its energy. (Taking the most enriched one instead
    favours small modules: one writing 2% of all energy is 10x enriched in a unit
    where it writes 20%, while one writing half of all energy cannot pass 2x.)
    ``membership`` is the module's part of the energy the unit gets from all
    modules (0-1); a unit is ``shared`` when a second over-represented module
    writes at least half as much.
    """
    n_units = attr.shape[1]
    if n_modules == 0:
        zeros = np.zeros(n_units)
        return UnitModules(
            np.full(n_units, -1), zeros, np.zeros(n_units, bool), np.zeros((n_units, 0))
        )
    per_module = np.asarray((onehot(feature_module, n_modules).T @ attr).T)  # [n_units, n_modules]
    total = attr.sum(axis=0)
    share = per_module / np.where(total > 0, total, 1.0)[:, None]
    expected = per_module.sum(axis=0) / max(float(total.sum()), 1e-300)
    enrich = share / np.where(expected > 0, expected, np.inf)[None, :]
    candidate = np.where(enrich >= min_enrichment, share, -np.inf)
    best = candidate.argmax(axis=1)
    rows = np.arange(n_units)
    module = np.where(np.isfinite(candidate[rows, best]), best, -1)
    in_modules = per_module.sum(axis=1)
    membership = np.where(
        module >= 0, per_module[rows, best] / np.where(in_modules > 0, in_modules, 1.0), 0.0
    )
    second = candidate.copy()
    second[rows, best] = -np.inf
    runner = second.argmax(axis=1)
    shared = (
        (module >= 0)
        & np.isfinite(second[rows, runner])
        & (share[rows, runner] >= 0.5 * share[rows, best])
    )
    return UnitModules(module, membership, shared, share)


def unit_correlation(gram: np.ndarray, mean: np.ndarray, std: np.ndarray, n: int) -> np.ndarray:
    """Pearson correlation of units from ``sum x x^T`` ``[n_units, n_units]``."""
    cov = gram / n - np.outer(mean, mean)
    s = np.where(std > 0, std, 1.0)
    corr = cov / np.outer(s, s)
    # a unit that never changes correlates with none: its covariances are rounding
    # (about 1e-17), which put it in a module, another one in another summation order
    still = std <= 0
    corr[still, :] = 0.0
    corr[:, still] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def noise_edge_mask(vals: np.ndarray, n_rows: int) -> np.ndarray:
    """Eigenvalues of a correlation matrix above the random-matrix noise bulk.

    The bulk of pure noise ends at the Marchenko-Pastur edge
    ``sigma^2 (1 + sqrt(n / n_rows))^2``; the noise variance ``sigma^2`` is what the
    signal eigenvalues leave (Laloux et al. 1999), found by iterating to a fixed point.
    """
    n = vals.size
    q = n / max(n_rows, 1)
    signal = np.zeros(n, bool)
    for _ in range(50):
        rest = vals[~signal]
        sigma2 = float(rest.mean()) if rest.size else 1.0
        new = vals > sigma2 * (1 + np.sqrt(q)) ** 2
        if (new == signal).all():
            break
        signal = new
    return signal


def unit_correlation_graph(
    corr: np.ndarray,
    n_rows: int,
    clean: bool = True,
    neighbours: int | None = None,
    device: str | None = None,
    unsigned: bool = False,
) -> sp.csr_matrix:
    """The units' co-activation graph: positive part of the (cleaned) correlations, or
    with ``unsigned`` their squares.

    ``neighbours``: keep only each unit's ``neighbours`` strongest positive weights, a
    pair staying when either unit keeps it (the symmetric k-nearest-neighbour graph
    that community detection runs on in single-cell analysis, Levine et al. 2015,
    "PhenoGraph"; Traag et al. 2019): ``n_units x neighbours`` edges at most, where the
    full graph has every pair. ``None`` (or at least ``n_units - 1``): every pair.
    With ``neighbours`` the cleaning decomposes in float32 (its eigenvalues to about
    1e-5; 1.5-2x faster than float64, which the cleaning's O(n_units^3) makes the view's
    largest cost at thousands of units). ``device``: where to decompose (a GPU does it
    in a fraction of the CPU's time; default the CPU)."""
    c = _cleaned(corr, n_rows, neighbours is not None, device) if clean else corr
    g = np.square(c) if unsigned else np.where(c > 0, c, 0.0)
    if clean:
        # a unit that never varies (its diagonal alone nonzero) keeps no edge: the
        # cleaning gives it rounding weights (about 1e-16), which put it in some module
        silent = np.count_nonzero(corr, axis=1) <= 1
        g[silent, :] = 0.0
        g[:, silent] = 0.0
    np.fill_diagonal(g, 0.0)
    n = g.shape[0]
    if neighbours is None or neighbours >= n - 1:
        return sp.csr_matrix(g)
    if neighbours < 1:
        raise ValueError(f"neighbours must be at least 1, got {neighbours}")
    # each row's strongest `neighbours` (ties at the cut broken by position)
    cols = np.argpartition(-g, neighbours - 1, axis=1)[:, :neighbours]
    rows = np.repeat(np.arange(n), neighbours)
    w = g[rows, cols.ravel()]
    on = w > 0
    kept = sp.csr_matrix((w[on], (rows[on], cols.ravel()[on])), shape=(n, n))
    return kept.maximum(kept.T).tocsr()  # weights are symmetric: the union of both lists


@torch.no_grad()
def _cleaned(corr: np.ndarray, n_rows: int, float32: bool, device: str | None) -> np.ndarray:
    """``corr`` without its global mode and noise bulk (:func:`unit_correlation_graph`)."""
    dtype = torch.float32 if float32 else torch.float64
    vals, vecs = torch.linalg.eigh(torch.from_numpy(corr).to(device or "cpu", dtype))
    v = vals.double().cpu().numpy()
    keep = noise_edge_mask(v, n_rows)
    keep[np.argmax(v)] = False  # the global mode
    idx = torch.from_numpy(np.flatnonzero(keep)).to(vecs.device)
    kept = vecs[:, idx]
    return ((kept * vals[idx]) @ kept.T).double().cpu().numpy()


def global_mode(corr: np.ndarray, same_sign: float = 0.9) -> np.ndarray | None:
    """The units' global mode: the top eigenvector of their correlation matrix when at
    least ``same_sign`` of its loadings share one sign (every unit moves together, the
    "market mode" of MacMahon & Garlaschelli 2015); ``None`` when there is none."""
    vals, vecs = np.linalg.eigh(corr)
    v = vecs[:, -1]
    if max((v > 0).mean(), (v < 0).mean()) < same_sign:
        return None
    return v


def global_mode_features(
    sae_W_dec: np.ndarray, unit_std: np.ndarray, mode: np.ndarray | None, min_cosine: float
) -> np.ndarray:
    """``[d_sae]`` bool: features whose decoder direction (units standardised) has
    ``|cos| >= min_cosine`` with the global mode: they encode the mode, not a module."""
    if mode is None:
        return np.zeros(sae_W_dec.shape[0], bool)
    W = sae_W_dec / np.where(unit_std > 0, unit_std, 1.0)[None, :]
    W = W / np.linalg.norm(W, axis=1, keepdims=True).clip(1e-12)
    return np.abs(W @ mode) >= min_cosine


def mode_correlation(codes: Codes, mode: np.ndarray, mode_var: float) -> np.ndarray:
    """``[d_sae]`` correlation of each feature's activation with the global mode's score
    ``s = sum_u mode_u (x_u - mean_u) / std_u`` (``mode_var`` its variance, the mode's
    eigenvalue), from the codes' cross moments."""
    n = max(codes.n_rows, 1)
    std = np.where(codes.unit_std > 0, codes.unit_std, 1.0)
    cov = (codes.cross - np.outer(codes.act_sum, codes.unit_mean)) @ (mode / std) / n
    var = codes.act_sq_sum / n - (codes.act_sum / n) ** 2
    return cov / np.sqrt(np.maximum(var, 1e-300) * max(mode_var, 1e-300))


def excluded_features(
    sae: SparseAutoencoder,
    codes: Codes,
    fires: sp.csr_matrix,
    mode: np.ndarray | None,
    mode_var: float,
    max_density: float,
    cosine: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(dense, global_mode)`` flags ``[d_sae]`` of the features kept out of modules:
    firing (``fires``, strong firings) on more than ``max_density`` of the rows, or
    carrying the units' global ``mode``: a decoder direction along it
    (:func:`global_mode_features`) or an activation that follows its score
    (:func:`mode_correlation`), either at least ``cosine`` in absolute value. The
    second catches a mode split over several latents, each writing part of it
    (on planted data with a strong mode: latents at decoder cosine 0.35-0.45 with
    the mode but activation correlation 0.6-0.7, which co-fire as a false module;
    module features stay under 0.15)."""
    n_rows = max(fires.shape[0], 1)
    dense = np.bincount(fires.indices, minlength=fires.shape[1]) > max_density * n_rows
    W_dec = sae.W_dec.detach().double().cpu().numpy()
    along = global_mode_features(W_dec, codes.unit_std, mode, cosine)
    if mode is not None:
        along |= np.abs(mode_correlation(codes, mode, mode_var)) >= cosine
    return dense, along
