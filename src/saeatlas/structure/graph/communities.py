"""The community step: firings -> co-occurrence graph -> finder -> cores -> units.

The one place that turns an SAE's firings into feature modules and modules of
units; the atlas, the bootstrap resamples and the seed reruns all call it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from .codes import Codes
from .cooccurrence import count_cooccurrence
from .edges import FeatureGraph, build_graph, densest_graph
from .finders import core_members, make_finder
from .firing import Firing
from .units import UnitModules, attribution, project_modules

if TYPE_CHECKING:
    from ..config import AtlasConfig


def cooccurrence_graph(
    fires: sp.csr_matrix, samples: np.ndarray, cfg: AtlasConfig, n_edges: int | None = None
) -> FeatureGraph:
    """The co-occurrence graph of the firings ``fires`` ``[n_rows, d_sae]``: its
    significant pairs, or with ``n_edges`` its ``n_edges`` most significant ones (a
    null graph as dense as the real one)."""
    co = count_cooccurrence(fires, window=cfg.window, samples=samples if cfg.window else None)
    if n_edges is None:
        return build_graph(co, kind=cfg.affinity, alpha=cfg.edge_alpha)
    return densest_graph(co, n_edges, kind=cfg.affinity, alpha=cfg.edge_alpha)


def feature_communities(fires: sp.csr_matrix, samples: np.ndarray, cfg: AtlasConfig):
    """The co-occurrence graph of ``fires``, the configured finder on it, and each
    community's core (``-1`` outside every core).

    Returns ``(graph, fitted finder, feature labels [d_sae])``.
    """
    graph = cooccurrence_graph(fires, samples, cfg)
    finder = make_finder(cfg).fit(graph.adjacency)
    labels = core_members(
        graph.adjacency, finder.labels_, cfg.min_link_fraction, cfg.min_module_features
    )
    return graph, finder, labels


@dataclass(frozen=True)
class Modules:
    """Feature communities and the modules of units they project onto."""

    graph: FeatureGraph
    finder: object
    """The fitted finder (``labels_``, ``modularity_``, ...)."""
    feature_module: np.ndarray
    """``[d_sae]`` each feature's module (-1 none)."""
    units: UnitModules
    attribution: np.ndarray
    """``[d_sae, n_units]`` energy each feature writes into each unit."""

    @property
    def n_modules(self) -> int:
        return int(self.feature_module.max(initial=-1)) + 1


def find_modules(
    f: Firing, cfg: AtlasConfig, rows: np.ndarray | None = None, samples: np.ndarray | None = None
) -> Modules:
    """Feature communities of ``f``'s firings and their modules of units.

    ``rows`` (with their ``samples``): compute them on these rows of the codes only,
    with repeats (a bootstrap resample); the feature moments behind the unit
    projection are then those of the resampled rows.
    """
    codes = f.codes
    if rows is None:
        fires, samples = f.fires, codes.samples
    else:
        fires, codes = f.fires[rows], _resampled(codes, rows, samples)
    graph, finder, labels = feature_communities(fires, samples, cfg)
    n_modules = int(labels.max(initial=-1)) + 1
    attr = attribution(f.sae, codes)
    units = project_modules(attr, labels, n_modules, cfg.min_enrichment)
    return Modules(graph, finder, labels, units, attr)


def _resampled(codes: Codes, rows: np.ndarray, samples: np.ndarray) -> Codes:
    """``codes`` on ``rows`` (with repeats), feature moments recomputed; unit moments
    are those of all rows."""
    raw = codes.matrix[rows]
    d = codes.d_sae
    return replace(
        codes,
        matrix=raw,
        rows=codes.rows[rows],
        samples=samples,
        act_sum=np.bincount(raw.indices, weights=raw.data, minlength=d),
        act_sq_sum=np.bincount(raw.indices, weights=raw.data.astype(np.float64) ** 2, minlength=d),
    )
