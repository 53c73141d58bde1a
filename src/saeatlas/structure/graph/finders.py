"""Module finders: scikit-learn-style estimators that partition a weighted graph.

Each takes a symmetric non-negative sparse adjacency ``[n, n]`` in ``fit`` and
sets ``labels_`` (``-1`` for nodes in no module: isolated nodes and groups
smaller than ``min_size``), ``n_modules_``, ``modularity_`` (Newman's Q of the
partition) and ``graph_``. Modules are numbered by size, largest first.

- :class:`LeidenModules`: Leiden modularity optimisation (Traag et al. 2019)
  from scikit-network (BSD), over a grid of resolutions; the partition with the
  highest standard (resolution 1) modularity is kept. The refinement step is
  our own (see :class:`_BoundedLeiden`): scikit-network 0.33.5's can loop
  forever on near-tied float32 gains (scikit-network issue #592).
- :class:`SpectralModules`: spectral clustering (Ng, Jordan & Weiss 2001) with
  the number of modules chosen by the largest eigengap of the normalised
  adjacency, the second method of Li et al. 2024 ("The Geometry of Concepts").
  They cluster the dense phi+1 matrix; here the affinity is the sparse graph
  itself, so memory stays with the number of edges.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted

from ...errors import ShapeError
from .finder_inputs import check_finder_params, check_graph

if TYPE_CHECKING:
    from ..config import AtlasConfig


def modularity(adjacency: sp.spmatrix, labels: np.ndarray) -> float:
    """Newman's modularity ``Q = sum_c [W_c / 2m - (d_c / 2m)^2]`` of a partition of a
    weighted undirected graph (``W_c``: weight inside module c counted both ways,
    ``d_c``: its total degree, ``2m``: total weight). Nodes labelled -1 each form
    their own singleton module."""
    return float(module_modularity(adjacency, labels).sum())


def module_modularity(adjacency: sp.spmatrix, labels: np.ndarray) -> np.ndarray:
    """Each module's term of :func:`modularity`, ``[n_modules]`` (labels 0..n-1);
    singletons (-1) add their own, usually negligible, terms to none of them."""
    A = sp.csr_matrix(adjacency)
    labels = np.asarray(labels)
    if labels.shape != (A.shape[0],) or labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"Need {A.shape[0]} integer `labels`, got {labels.dtype} {labels.shape}.")
    n_mod = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    two_m = float(A.sum())
    if two_m <= 0 or n_mod == 0:
        return np.zeros(n_mod)
    deg = np.asarray(A.sum(axis=1)).ravel()
    coo = A.tocoo()
    same = (labels[coo.row] == labels[coo.col]) & (labels[coo.row] >= 0)
    w_in = np.bincount(labels[coo.row][same], weights=coo.data[same], minlength=n_mod)
    on = labels >= 0
    d = np.bincount(labels[on], weights=deg[on], minlength=n_mod)
    return w_in / two_m - (d / two_m) ** 2


def relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Groups smaller than ``min_size`` (and -1) become -1; the rest 0.. by size."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    ok = labels >= 0
    if not ok.any():
        return out
    uniq, counts = np.unique(labels[ok], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    new = 0
    for j in order:
        if counts[j] < min_size:
            continue
        out[labels == uniq[j]] = new
        new += 1
    return out


def core_members(
    adjacency: sp.spmatrix, labels: np.ndarray, min_link_fraction: float, min_size: int
) -> np.ndarray:
    """Labels with each module cut to its core: a node stays when it has edges to at
    least ``min_link_fraction`` of its module's other members. Community finders give
    every connected node a module, so a node with a few stray edges into a module
    would join it; this keeps modules to nodes that are bound into them."""
    A = sp.csr_matrix(adjacency)
    labels = np.asarray(labels).copy()
    if min_link_fraction <= 0 or labels.max(initial=-1) < 0:
        return labels
    B = A.copy()
    B.data[:] = 1.0
    for _ in range(3):  # a removal can weaken others; a few rounds settle it
        if labels.max(initial=-1) < 0:
            break
        n_mod = int(labels.max()) + 1
        size = np.bincount(labels[labels >= 0], minlength=n_mod)
        onehot = sp.csr_matrix(
            (np.ones(int((labels >= 0).sum())), (np.flatnonzero(labels >= 0), labels[labels >= 0])),
            shape=(A.shape[0], n_mod),
        )
        links = np.asarray((B @ onehot).todense())  # [n, n_mod] edges into each module
        own = np.where(labels >= 0, links[np.arange(len(labels)), labels.clip(0)], 0)
        need = min_link_fraction * (size[labels.clip(0)] - 1)
        weak = (labels >= 0) & (own < need)
        if not weak.any():
            break
        labels[weak] = -1
    return relabel(labels, min_size)


def onehot(labels: np.ndarray, n_classes: int | None = None, dtype=np.float64) -> sp.csr_matrix:
    """``[n_items, n_classes]`` CSR with a 1 at ``(i, labels[i])``; label -1 gives an empty row."""
    labels = np.asarray(labels)
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if labels.size else 0
    member = np.flatnonzero(labels >= 0)
    return sp.csr_matrix(
        (np.ones(len(member), dtype), (member, labels[member])), shape=(len(labels), n_classes)
    )


def check_feature_module(feature_module: np.ndarray, d_sae: int) -> np.ndarray:
    """``feature_module`` as int64 ``[d_sae]``, or a ShapeError naming the fix."""
    feature_module = np.asarray(feature_module, dtype=np.int64)
    if feature_module.shape != (d_sae,):
        raise ShapeError(
            f"`feature_module` has shape {feature_module.shape}; expected ({d_sae},), "
            "one module per SAE feature (-1 for none)."
        )
    return feature_module


class _ModuleFinder(BaseEstimator):
    """What every finder shares: ``fit`` sets ``graph_`` and calls :meth:`_partition`."""

    min_size: int

    def fit(self, X, y=None):
        check_finder_params(self)  # hyperparameters are checked in fit, as scikit-learn does
        A = check_graph(X)
        self.graph_ = A
        self.labels_ = relabel(self._partition(A), self.min_size)
        self.n_modules_ = int(self.labels_.max()) + 1 if self.labels_.size else 0
        self.modularity_ = modularity(A, self.labels_) if self.n_modules_ else 0.0
        return self

    def _partition(self, A: sp.csr_matrix) -> np.ndarray:
        """Labels of a checked symmetric graph (-1: no module), before ``relabel``."""
        raise TypeError(f"{type(self).__name__} must define _partition.")

    @classmethod
    def from_config(cls, cfg: AtlasConfig) -> _ModuleFinder:
        """The finder with the settings of an :class:`AtlasConfig`, unfitted."""
        raise TypeError(f"{cls.__name__} must define from_config.")

    @classmethod
    def levels(cls, cfg: AtlasConfig) -> list[_ModuleFinder]:
        """One unfitted finder per scale the atlas compares, coarsest first (one scale
        unless the finder has a resolution to vary)."""
        return [cls.from_config(cfg)]

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    def module_modularity(self) -> np.ndarray:
        check_is_fitted(self, "labels_")
        return module_modularity(self.graph_, self.labels_)


#: The scikit-network releases whose private Leiden methods (``_optimize``,
#: ``_optimize_refine``) :func:`_bounded_leiden` overrides; pyproject.toml pins the
#: same range, and a test fails on any other release.
SKNETWORK_RANGE = ((0, 33), (0, 34))


def sknetwork_version() -> tuple[int, ...]:
    """The installed scikit-network release as numbers (its distribution metadata:
    ``sknetwork.__version__`` is not updated in patch releases)."""
    from importlib.metadata import version

    return tuple(int(p) for p in version("scikit-network").split(".")[:3] if p.isdigit())


@functools.lru_cache(maxsize=1)
def _bounded_leiden():
    """scikit-network's Leiden with a refinement step that always terminates.

    Leiden refines each local-moving community by merging its nodes, starting
    from singletons, with moves confined to the community (Traag et al. 2019,
    section "Refinement"). scikit-network 0.33.5 does this with a loop that
    stops only when no node moves, so two gains that tie to float32 precision
    make a node swap between clusters forever (issue #592, fixed upstream in
    #593, not released); it also picks among improving moves with the C
    library's unseeded ``rand()``, so results depended on what ran before in
    the process. Here the refinement is scikit-network's own local-moving pass
    (which stops when a pass gains less than ``tol_optimization``) on the graph
    with every edge between two communities removed, started from singletons:
    the same moves, greedy instead of random, bounded and deterministic. The
    node weights stay those of the whole graph, so the gains are the whole
    graph's modularity gains.
    """
    from sknetwork.clustering import Leiden

    lo, hi = SKNETWORK_RANGE
    if not lo <= sknetwork_version()[:2] < hi:
        found = ".".join(map(str, sknetwork_version()))
        raise ImportError(
            f"saeatlas's Leiden step overrides private methods of scikit-network "
            f"{lo[0]}.{lo[1]}.x and was not checked against scikit-network {found}; install "
            f"'scikit-network>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'."
        )

    class _BoundedLeiden(Leiden):
        def _optimize_refine(self, labels, labels_refined, adjacency, out_weights, in_weights):
            labels = np.asarray(labels)
            coo = adjacency.tocoo()
            inside = labels[coo.row] == labels[coo.col]
            within = sp.csr_matrix(
                (coo.data[inside], (coo.row[inside], coo.col[inside])), shape=adjacency.shape
            )
            within.indices = within.indices.astype(np.int32)
            within.indptr = within.indptr.astype(np.int32)
            refined, _ = self._optimize(labels_refined, within, out_weights, in_weights)
            return np.asarray(refined)

    return _BoundedLeiden


class LeidenModules(_ModuleFinder):
    """Leiden communities over a grid of resolutions (Traag et al. 2019, scikit-network).

    Args:
        resolutions: resolutions to try; the partition with the highest
            modularity at resolution 1 wins.
        min_size: smallest module kept; smaller groups are labelled -1.
        random_state: seed of Leiden's node order.
    """

    def __init__(
        self,
        resolutions: tuple[float, ...] = (0.5, 1.0, 2.0),
        min_size: int = 2,
        random_state: int | None = None,
    ) -> None:
        self.resolutions = resolutions
        self.min_size = min_size
        self.random_state = random_state

    @classmethod
    def from_config(cls, cfg: AtlasConfig) -> LeidenModules:
        """The finder ``cfg`` names (``method: leiden``), unfitted."""
        return cls(cfg.resolutions, cfg.min_module_features, cfg.seed)

    @classmethod
    def levels(cls, cfg: AtlasConfig) -> list[LeidenModules]:
        """One finder per resolution of ``cfg.resolutions``, lowest (coarsest) first."""
        return [cls((r,), cfg.min_module_features, cfg.seed) for r in sorted(cfg.resolutions)]

    def _partition(self, A: sp.csr_matrix) -> np.ndarray:
        Leiden = _bounded_leiden()
        best, best_q, best_r = np.full(A.shape[0], -1), -np.inf, None
        self.scores_ = {}
        active = np.flatnonzero(np.asarray(A.sum(axis=1)).ravel() > 0)
        if active.size >= 2:
            sub = A if active.size == A.shape[0] else A[active][:, active]
            for r in self.resolutions:
                leiden = Leiden(
                    resolution=r,
                    shuffle_nodes=self.random_state is not None,
                    random_state=self.random_state,
                )
                part = np.asarray(leiden.fit_predict(sub))
                labels = np.full(A.shape[0], -1)
                labels[active] = part
                labels = relabel(labels, self.min_size)
                q = modularity(A, labels)
                self.scores_[r] = q
                if q > best_q + 1e-12:
                    best, best_q, best_r = labels, q, r
        self.resolution_ = best_r
        return best


class SpectralModules(_ModuleFinder):
    """Spectral clustering with k from the eigengap (Ng et al. 2001; Li et al. 2024).

    Args:
        max_modules: the most modules considered.
        min_size: smallest module kept; smaller groups are labelled -1.
        random_state: seed of the eigen-solver start and of k-means.
    """

    def __init__(self, max_modules: int = 30, min_size: int = 2, random_state: int | None = None):
        self.max_modules = max_modules
        self.min_size = min_size
        self.random_state = random_state

    @classmethod
    def from_config(cls, cfg: AtlasConfig) -> SpectralModules:
        """The finder ``cfg`` names (``method: spectral``), unfitted."""
        return cls(min_size=cfg.min_module_features, random_state=cfg.seed)

    def _partition(self, A: sp.csr_matrix) -> np.ndarray:
        labels = np.full(A.shape[0], -1)
        deg = np.asarray(A.sum(axis=1)).ravel()
        active = np.flatnonzero(deg > 0)
        self.eigenvalues_ = np.zeros(0)
        if active.size >= 3:
            sub = A if active.size == A.shape[0] else A[active][:, active]
            d = 1.0 / np.sqrt(deg[active])
            N = sp.diags(d) @ sub @ sp.diags(d)
            n_eig = min(self.max_modules + 1, active.size - 1)
            rng = np.random.default_rng(self.random_state)
            v0 = rng.uniform(0.5, 1.5, active.size)
            n_comp = connected_components(sub, directed=False)[0]
            vals, vecs = eigsh(N, k=n_eig, which="LA", v0=v0)
            order = np.argsort(-vals)
            vals, vecs = vals[order], vecs[:, order]
            self.eigenvalues_ = vals
            gaps = vals[:-1] - vals[1:]
            # At least as many modules as connected components; k = position of the largest gap.
            lo = max(n_comp, 2) - 1
            k = int(np.argmax(gaps[lo:]) + lo + 1) if lo < len(gaps) else n_comp
            emb = vecs[:, :k]
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
            km = KMeans(k, n_init=4, random_state=self.random_state).fit(emb)
            labels[active] = km.labels_
        return labels


#: The module finders by the name `AtlasConfig.method` takes. A new finder is a
#: subclass of ``_ModuleFinder`` with ``from_config``, added here.
FINDERS: dict[str, type[_ModuleFinder]] = {"leiden": LeidenModules, "spectral": SpectralModules}


def make_finder(cfg: AtlasConfig) -> _ModuleFinder:
    """The finder ``cfg.method`` names, unfitted."""
    return FINDERS[cfg.method].from_config(cfg)


def make_levels(cfg: AtlasConfig, member: int = 0) -> list[_ModuleFinder]:
    """The finder ``cfg.method`` names at each of its scales, coarsest first, unfitted,
    seeded for ensemble member ``member`` (:func:`member_seed`)."""
    finders = FINDERS[cfg.method].levels(cfg)
    for f in finders:
        f.set_params(random_state=member_seed(cfg.seed, member))
    return finders


def best_partition(cfg: AtlasConfig, graph: sp.spmatrix) -> tuple[float, np.ndarray]:
    """``(modularity, labels)`` of the best partition the finder ``cfg`` names reaches on
    ``graph`` over all its scales, a null graph's own best chance (Guimera et al. 2004):
    at one coarse scale a noise graph can stay one module (Q 0 in every draw), or merge
    into a few communities whose modularity varies from draw to draw."""
    f = make_finder(cfg).fit(graph)
    return float(f.modularity_), f.labels_


def member_seed(seed: int, member: int) -> int:
    """The finder's seed for ensemble member ``member``: ``seed`` for member 0, one drawn
    from ``(seed, member)`` for the others. Each member fits with its own node order,
    so that the consensus averages over the finder's own randomness as well as over
    dictionaries and rows (what consensus clustering was made for, Lancichinetti &
    Fortunato 2012): with one seed for all, a partition that depends on the node order
    (two of four equal blocks merged at a coarse resolution, which two a draw) was
    "reproduced" by every member, and another analysis seed drew another one."""
    if member == 0:
        return seed
    return int(np.random.SeedSequence([seed, member]).generate_state(1)[0])
