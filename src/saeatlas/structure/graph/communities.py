"""The community step: firings -> co-occurrence graph -> finder -> cores -> units.

The one place that turns an SAE's firings into feature modules and modules of
units; the atlas, the bootstrap resamples and the seed reruns all call it.

Under ``torchrun``, a graph that every rank computes together (``coord``: the
analysed SAE's own graph, the real graph of the null tests) is counted in parts:
each rank counts and tests the pairs of its block of latents only, and every
rank gets the whole graph (:mod:`.edges`). The other graphs (ensemble members,
null draws) are items of :func:`graph_items`: for a dictionary of at least
``cfg.count_in_parts_from`` latents every rank computes every item, one after
another, each graph counted in parts; for a smaller one the items are spread over
the ranks (``coord.spread``) and each graph is counted whole by the rank that
computes its item, since an item never meets the other ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import scipy.sparse as sp

from ..._coordinator import Coordinator, solo
from .cooccurrence import count_cooccurrence, count_in_parts
from .edges import FeatureGraph, build_graph, densest_graph
from .finders import core_members, make_finder, make_levels
from .firing import Firing
from .units import UnitModules, attribution, project_modules

if TYPE_CHECKING:
    from ..config import AtlasConfig

T = TypeVar("T")


def cooccurrence_graph(
    fires: sp.csr_matrix,
    samples: np.ndarray,
    cfg: AtlasConfig,
    n_edges: int | None = None,
    coord: Coordinator | None = None,
) -> FeatureGraph:
    """The co-occurrence graph of the firings ``fires`` ``[n_rows, d_sae]``: its
    significant pairs, or with ``n_edges`` its ``n_edges`` most significant ones (a
    null graph as dense as the real one; its q-values are ranked among the pairs that
    can be edges only: :func:`.edges.densest_graph`). The pairs are counted and tested on
    ``cfg.device`` (scipy and numpy on the CPU, torch on a GPU:
    :func:`.cooccurrence.count_cooccurrence`, :mod:`.edges`).

    ``coord``: the ranks of a ``torchrun`` job, all calling this together with the same
    firings: each counts and tests its part of the pairs (a block of latents), and each
    gets the graph one process builds. Never inside one of ``coord.spread``'s items."""
    coord = coord if coord is not None else solo()
    count = dict(
        window=cfg.window,
        samples=samples if cfg.window else None,
        device=cfg.device,
        part=(coord.world.rank, coord.world.size),
    )
    kw = dict(kind=cfg.affinity, alpha=cfg.edge_alpha, device=cfg.device, coord=coord)
    if n_edges is None:  # the counts of many rows: one part of them at a time
        return build_graph(count_in_parts(fires, **count), **kw)
    # density-matched null graphs are counted on the null rows only (`null_rows`)
    return densest_graph(count_cooccurrence(fires, **count), n_edges, usable_only=True, **kw)


def counts_in_parts(cfg: AtlasConfig, d_sae: int, coord: Coordinator) -> bool:
    """Whether every co-occurrence graph of a dictionary of ``d_sae`` latents is counted
    in parts by all ranks of ``coord`` together (``d_sae >= cfg.count_in_parts_from``
    under ``torchrun``), rather than whole by the rank that computes its item. It
    depends on ``d_sae``, ``cfg`` and the number of ranks only, so every rank decides
    alike."""
    return coord.distributed and d_sae >= cfg.count_in_parts_from


def graph_items(
    n: int,
    item: Callable[[int, Coordinator | None], T],
    coord: Coordinator,
    in_parts: bool,
    on_item: Callable[[], None] | None = None,
) -> list[T]:
    """``[item(0, c), ..., item(n - 1, c)]`` on every rank of ``coord``, for items that
    build co-occurrence graphs and pass ``c`` to :func:`cooccurrence_graph` (or
    :func:`find_levels`) as its ``coord``; ``in_parts``: :func:`counts_in_parts`.

    In parts, every rank computes every item, in index order, with ``c = coord``: each
    graph is counted in parts by all ranks together, one graph at a time, so no rank
    holds more than its block of any graph's pair counts (the rest of an item, such
    as fitting the finders on the gathered graph, every rank does alike). Otherwise
    ``coord.spread`` shares the items out with ``c = None``: each graph is counted
    whole by the rank that computes its item (faster while whole graphs are small).
    An item must depend on its index alone (:meth:`.Coordinator.spread`), so both
    give the list one process gives. ``on_item()`` is called after each item this
    rank computes (progress)."""
    if not in_parts:
        return coord.spread(n, lambda i: item(i, None), on_item)
    out = []
    for i in range(n):  # every rank, in the same order: the same meetings
        out.append(item(i, coord))
        if on_item is not None:
            on_item()
    return out


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
    f: Firing,
    cfg: AtlasConfig,
    rows: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    coord: Coordinator | None = None,
) -> Modules:
    """Feature communities of ``f``'s firings (the finder ``cfg`` names) and their
    modules of units.

    ``rows`` (with their ``samples``): compute them on these rows of the codes only,
    with repeats (a bootstrap resample); the feature moments behind the unit
    projection are then those of the resampled rows. ``coord``: as in :func:`find_levels`.
    """
    return find_levels(f, cfg, rows, samples, finders=[make_finder(cfg)], coord=coord)[0]


def find_levels(
    f: Firing,
    cfg: AtlasConfig,
    rows: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    *,
    finders: list | None = None,
    coord: Coordinator | None = None,
) -> list[Modules]:
    """:func:`find_modules` at every scale of the finder (``make_levels(cfg)``, coarsest
    first, or the given unfitted ``finders``), on one co-occurrence graph (counted in
    parts by the ranks of ``coord``, all calling this together: :func:`cooccurrence_graph`)."""
    codes = f.codes
    if rows is None:
        fires, samples = f.fires, codes.samples
    else:  # the pattern only, which is all the counting reads: no copy of the values
        pattern = (np.ones(f.fires.nnz, bool), f.fires.indices, f.fires.indptr)
        fires = sp.csr_array(pattern, shape=f.fires.shape)[rows]
    graph = cooccurrence_graph(fires, samples, cfg, coord=coord)
    del fires
    attr = attribution(f.sae, codes, rows)
    out = []
    for finder in make_levels(cfg) if finders is None else finders:
        finder = finder.fit(graph.adjacency)
        labels = core_members(
            graph.adjacency, finder.labels_, cfg.min_link_fraction, cfg.min_module_features
        )
        n_modules = int(labels.max(initial=-1)) + 1
        units = project_modules(attr, labels, n_modules, cfg.min_enrichment)
        out.append(Modules(graph, finder, labels, units, attr))
    return out
