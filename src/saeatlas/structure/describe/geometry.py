"""Geometry against function: do features that fire together also point together?

Li et al. 2024 ("The Geometry of Concepts: Sparse Autoencoder Feature
Structure") cluster SAE decoder directions and compare the clusters with
co-occurrence communities. Their comparison has no null that controls for
feature frequency: frequent features can sit together in direction space (they
share the data's dominant directions) and in the co-occurrence graph (they
co-fire by chance more often), so a partition agreement can come from frequency
alone. Here:

- :func:`.directions.direction_clusters`: spherical k-means on the unit-normalised
  decoder rows ``W_dec [d_sae, d_in]`` (Dhillon & Modha 2001: assign by cosine,
  centroids renormalised to the sphere).
- :func:`geometry_function_agreement`: adjusted mutual information (Vinh et al.
  2010) between direction clusters and co-occurrence modules, against two
  nulls: module labels permuted across features, and permuted only within bins
  of firing density (the frequency-stratified null).
- :func:`atlas_geometry`: the two together on an SAE and its :class:`.Atlas`.

The 2-D map of the features is in :mod:`.feature_map`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import norm
from sklearn.metrics import adjusted_mutual_info_score

from ...sae import SparseAutoencoder
from ..atlas import Atlas
from ..inference.draws import draws_p, draws_z, rank_p
from .directions import direction_clusters

try:  # the expected MI only depends on the marginals, which permutations keep
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information
except ImportError:  # private in sklearn; fall back to one full AMI per permutation
    expected_mutual_information = None


# -- agreement and its nulls -------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementNull:
    """The AMI of one null model's draws."""

    name: str
    """``permutation`` or ``frequency_stratified``."""
    ami: float
    """The real AMI."""
    null_ami: np.ndarray
    """``[n_perm]`` AMI of each draw."""

    @property
    def null_mean(self) -> float:
        return float(self.null_ami.mean()) if self.null_ami.size else float("nan")

    @property
    def null_std(self) -> float:
        return float(self.null_ami.std(ddof=1)) if self.null_ami.size > 1 else float("nan")

    @property
    def z(self) -> float:
        """NaN where the draws have no spread (:func:`..inference.draws.draws_z`)."""
        return draws_z(self.ami, self.null_ami)

    @property
    def p(self) -> float:
        """Parametric one-sided p-value ``P(N(0, 1) >= z)`` (the empirical one where the
        draws have no spread)."""
        return draws_p(self.ami, self.null_ami, lambda z, n: norm.sf(z))

    @property
    def p_empirical(self) -> float:
        """``(1 + #{null >= real}) / (1 + n_perm)``."""
        return rank_p(self.ami, self.null_ami, tol=1e-12)

    def as_dict(self) -> dict[str, Any]:
        return {
            "null": self.name,
            "null_mean": self.null_mean,
            "null_std": self.null_std,
            "z": self.z if np.isfinite(self.z) else None,  # None: the draws have no spread
            "p": self.p,
            "p_empirical": self.p_empirical,
            "n_draws": int(self.null_ami.size),
        }


@dataclass(frozen=True)
class Agreement:
    """How far direction clusters agree with co-occurrence modules, beyond chance and frequency."""

    ami: float
    """Adjusted mutual information of the two partitions over the features in both."""
    n_features: int
    """Features compared: in a module and in a direction cluster."""
    n_direction_clusters: int
    """Direction clusters among those features."""
    n_modules: int
    """Co-occurrence modules among those features."""
    n_bins: int
    """Density bins of the frequency-stratified null."""
    permutation: AgreementNull
    """Module labels permuted across all compared features."""
    stratified: AgreementNull
    """Module labels permuted only within density bins: agreement that frequency
    alone explains appears in this null too."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ami": self.ami,
            "n_features": self.n_features,
            "n_direction_clusters": self.n_direction_clusters,
            "n_modules": self.n_modules,
            "n_bins": self.n_bins,
            "nulls": [self.permutation.as_dict(), self.stratified.as_dict()],
        }


def density_bins(density: np.ndarray, n_bins: int) -> np.ndarray:
    """``[n]`` bin of each feature: quantile bins of firing density (deciles for
    ``n_bins=10``; the same as quantiles of log density). Tied densities share a bin,
    so bins can be fewer than ``n_bins``; they are numbered 0.. without gaps."""
    density = np.asarray(density, dtype=np.float64)
    edges = np.quantile(density, np.linspace(0, 1, n_bins + 1)[1:-1])
    raw = np.searchsorted(edges, density, side="right")
    return np.unique(raw, return_inverse=True)[1]


def geometry_function_agreement(
    direction_labels: np.ndarray,
    module_labels: np.ndarray,
    density: np.ndarray,
    *,
    n_perm: int = 200,
    n_bins: int = 10,
    random_state: int | None = 0,
) -> Agreement:
    """AMI between direction clusters and co-occurrence modules, with two nulls.

    Over the features with ``module_labels >= 0`` and ``direction_labels >= 0``:

    - **permutation**: module labels permuted across those features (the usual
      chance level; AMI is already corrected so its mean is about 0);
    - **frequency_stratified**: features binned by firing density (quantiles,
      ``n_bins``; at most a bin per two features) and module labels permuted
      only within bins. When frequent features cluster together both in
      direction space and in co-occurrence, this null keeps that agreement, so
      only agreement beyond what frequency explains counts.

    For each null: mean, spread, ``z = (AMI - mean) / std``, the parametric
    p-value ``P(N(0, 1) >= z)`` and the empirical one ``(1 + #{null >= AMI}) /
    (1 + n_perm)``.

    Args:
        direction_labels: ``[d_sae]`` from :func:`direction_clusters` (-1 excluded).
        module_labels: ``[d_sae]`` co-occurrence modules (-1 none).
        density: ``[d_sae]`` firing density of each feature.
        n_perm: draws per null.
        n_bins: density bins of the stratified null.
        random_state: seed of the permutations.
    """
    a = np.asarray(direction_labels)
    b = np.asarray(module_labels)
    density = np.asarray(density, dtype=np.float64)
    if not a.shape == b.shape == density.shape or a.ndim != 1:
        raise ValueError(
            "`direction_labels`, `module_labels` and `density` must be [d_sae] arrays of one "
            f"length, got shapes {a.shape}, {b.shape} and {density.shape}."
        )
    if n_perm < 0 or n_bins < 1:
        raise ValueError(f"`n_perm` must be >= 0 and `n_bins` >= 1, got {n_perm} and {n_bins}.")
    sel = (a >= 0) & (b >= 0)
    n = int(sel.sum())
    if n < 2:
        raise ValueError(
            f"Only {n} features are both in a module and in a direction cluster; "
            "the agreement needs at least 2."
        )
    a = np.unique(a[sel], return_inverse=True)[1]
    b = np.unique(b[sel], return_inverse=True)[1]
    bins = density_bins(density[sel], min(n_bins, max(1, n // 2)))
    rng = np.random.default_rng(random_state)
    ami = _Ami(a, b)
    real = ami(b)
    slots = np.argsort(bins, kind="stable")
    plain, strat = np.zeros(n_perm), np.zeros(n_perm)
    for i in range(n_perm):
        plain[i] = ami(b[rng.permutation(n)])
        # Sorting by (bin, random key) shuffles within bins; slots are the bins in order.
        perm = np.empty(n, dtype=b.dtype)
        perm[slots] = b[np.lexsort((rng.random(n), bins))]
        strat[i] = ami(perm)
    return Agreement(
        ami=real,
        n_features=n,
        n_direction_clusters=int(a.max()) + 1,
        n_modules=int(b.max()) + 1,
        n_bins=int(bins.max()) + 1,
        permutation=AgreementNull("permutation", real, plain),
        stratified=AgreementNull("frequency_stratified", real, strat),
    )


class _Ami:
    """AMI of fixed labels ``a`` against relabellings of ``b`` with the same marginals.

    Entropies and the expected mutual information depend only on the cluster
    sizes, which a permutation keeps, so they are computed once and each draw
    costs one contingency count. Equal to sklearn's ``adjusted_mutual_info_score``
    (arithmetic normalisation).
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a = a
        self.n_a, self.n_b = int(a.max()) + 1, int(b.max()) + 1
        self.fast = expected_mutual_information is not None and self.n_a > 1 and self.n_b > 1
        if self.fast:
            n = a.size
            ca, cb = np.bincount(a), np.bincount(b)
            self.log_ca, self.log_cb = np.log(ca), np.log(cb)
            h = [-(c / n * np.log(c / n)).sum() for c in (ca, cb)]
            contingency = sp.csr_matrix((np.ones(n), (a, b)), shape=(self.n_a, self.n_b))
            contingency.sum_duplicates()
            contingency = contingency.astype(np.int64)
            self.emi = float(expected_mutual_information(contingency, n))
            self.normalizer = (h[0] + h[1]) / 2

    def __call__(self, b: np.ndarray) -> float:
        if not self.fast:
            return float(adjusted_mutual_info_score(self.a, b))
        n = self.a.size
        counts = np.bincount(self.a * self.n_b + b, minlength=self.n_a * self.n_b)
        ij = np.flatnonzero(counts)
        nij = counts[ij].astype(np.float64)
        i, j = np.divmod(ij, self.n_b)
        mi = float((nij / n * (np.log(nij) + np.log(n) - self.log_ca[i] - self.log_cb[j])).sum())
        mi = max(mi, 0.0)
        eps = np.finfo(np.float64).eps
        den = self.normalizer - self.emi
        den = min(den, -eps) if den < 0 else max(den, eps)
        num = mi - self.emi
        num = min(num, -eps) if num < 0 else max(num, eps)
        return float(num / den)


# -- on an atlas -------------------------------------------------------------------------------


def atlas_geometry(
    sae: SparseAutoencoder,
    atlas: Atlas,
    *,
    n_perm: int = 200,
    n_bins: int = 10,
    random_state: int | None = 0,
) -> tuple[np.ndarray, Agreement]:
    """Direction clusters of the atlas's module features (as many as its modules) and
    their agreement with the modules: ``(direction_labels [d_sae], Agreement)``.

    Density is the atlas's ``firing_density`` (the firing the co-occurrence graph
    counts), else ``density``.
    """
    feats = atlas.features
    module = feats["module"].to_numpy()
    col = "firing_density" if "firing_density" in feats else "density"
    density = feats[col].to_numpy()
    if (module >= 0).sum() < 2:
        raise ValueError("The atlas has no modules with features; nothing to compare.")
    labels = direction_clusters(
        sae.W_dec, module_labels=module, mask=module >= 0, random_state=random_state
    )
    agreement = geometry_function_agreement(
        labels, module, density, n_perm=n_perm, n_bins=n_bins, random_state=random_state
    )
    return labels, agreement
