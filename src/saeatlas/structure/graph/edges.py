"""From pair counts to a feature graph: the pairs kept as edges.

``build_graph`` keeps the pairs of a :class:`.cooccurrence.Cooccurrence` that
pass Benjamini-Hochberg over all ``d (d - 1) / 2`` pairs of latents that fire as
a weighted, symmetric adjacency matrix; ``densest_graph`` keeps a given number of
the most significant pairs instead (density-matched null graphs). The pairs'
affinities and p-values come from :mod:`.pairs` (numpy on the CPU, torch on any
other device, as ``device`` and ``engine`` choose).

Under ``torchrun`` each rank holds one part of the pair counts, a block of rows
of the upper triangle (``count_cooccurrence(..., part=(rank, W))``), and passes
the ranks' ``coord``. The ranks add up their stored pairs for the p cut (one
meeting), each tests its own block, and the pairs under the cut are gathered in
rank order, which is the row-major order of all the pairs: every rank builds
the graph one process builds from all of them, and none holds more than its
block of the counts. ``densest_graph`` adds up the usable pairs each time it
widens its cut (one meeting a round, the same rounds on every rank).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch

from ..._coordinator import Coordinator, solo
from . import torch_hypergeom as th
from .cooccurrence import Cooccurrence, _engine, _n_threads
from .hypergeom import benjamini_hochberg, hypergeom_upper_tail, log_pmf
from .pairs import affinity_fn, chunk, chunk_rows, torch_chunks

# ---------------------------------------------------------------- graph


#: The joint firings a pair needs to be an edge (``min_count``): a latent that fires on
#: fewer rows can be no edge.
MIN_COUNT = 5


@dataclass(frozen=True, eq=False)
class FeatureGraph:
    """Significant positive co-firing between latents, as a weighted undirected graph."""

    adjacency: sp.csr_array
    """``[d_sae, d_sae]`` symmetric float64: the affinity of each edge, zero diagonal."""
    kind: str
    """Affinity used as the edge weight: 'phi', 'npmi' or 'jaccard'."""
    alpha: float
    """False discovery rate the edges are controlled at."""
    min_count: int
    """Fewest joint firings an edge needs."""
    n_tests: int
    """``m``: pairs of latents that fire, the multiple-testing family."""
    n_rows: int
    """``N``: units of counting."""
    n_fire: np.ndarray
    """``[d_sae]`` int64: units on which each latent fires."""
    row: np.ndarray
    """``[n_edges]`` int32: latent ``i`` of each edge."""
    col: np.ndarray
    """``[n_edges]`` int32: latent ``j > i`` of each edge."""
    weight: np.ndarray
    """``[n_edges]`` float64: affinity (as in `adjacency`)."""
    count: np.ndarray
    """``[n_edges]``: joint firings ``a``."""
    p: np.ndarray
    """``[n_edges]`` float64: p-value against independence (:func:`hypergeom_upper_tail`)."""
    q: np.ndarray
    """``[n_edges]`` float64: Benjamini-Hochberg adjusted p-value among `n_tests`."""

    @property
    def n_edges(self) -> int:
        return int(self.row.size)

    @property
    def d_sae(self) -> int:
        return int(self.n_fire.shape[0])


def build_graph(
    co: Cooccurrence | tuple[int, Iterable[Cooccurrence]],
    *,
    kind: str = "phi",
    alpha: float = 0.05,
    min_count: int = MIN_COUNT,
    n_threads: int | None = None,
    device: str | torch.device | None = None,
    engine: str = "auto",
    coord: Coordinator | None = None,
) -> FeatureGraph:
    """Keep the pairs that co-fire significantly more than chance; weight them by affinity.

    A pair ``i < j`` becomes an edge when

    - its Benjamini-Hochberg q-value is ``<= alpha`` among all ``m = d (d - 1) / 2``
      pairs of the ``d`` latents that fire (pairs never seen together have ``p = 1``
      and only enlarge ``m``), with ``p`` from :func:`hypergeom_upper_tail`;
    - its affinity is ``> 0`` (only positive association);
    - it fired together on at least ``min_count`` units. Rows of one text are not
      independent, so a few joint firings within one document can look significant
      under the hypergeometric null; this guards against that. It filters edges only:
      such pairs still count as tests.

    Only pairs with ``p <= cut = alpha * n_pairs / m`` can reach ``q <= alpha`` (for the
    others every term of the BH minimum exceeds ``alpha``), so only those are kept
    while streaming over the pairs, and their q-values are exact. A pair whose first
    term ``P(X = a) <= p`` already exceeds ``cut`` is dropped before its tail is summed.

    Args:
        n_threads: chunks of pairs scored at once (numpy engine; default: the CPUs this
            process may use).
        device, engine: where the pairs are tested (see :mod:`.edges`).
        coord: the ranks of a ``torchrun`` job, each holding its part of the counts
            (``co.part == (rank, W)``); every rank returns the whole graph. None: a
            process on its own, with all the counts.

    ``co`` may also be counts that come one part at a time
    (:func:`.cooccurrence.count_in_parts`: ``(bound, parts)``), each part dropped once
    its pairs are tested: the same graph, holding one part of the counts at a time.
    The p cut needs the number of stored pairs before the parts are counted, so the
    parts are tested at the cut of ``bound`` (at least the pairs stored), which keeps
    every pair the exact cut keeps and a few more; once all are counted, the pairs
    above the exact cut are dropped, so the edges, p- and q-values are those of all
    the counts at once. Under ``torchrun`` each rank passes the parts of its block of
    latents (``part=(rank, W)``).
    """
    if isinstance(co, Cooccurrence):
        coord = _check_coord(co, coord)
        bound, parts = _total(coord, co.n_pairs), [co]
    else:
        coord = coord if coord is not None else solo()
        bound, parts = co
    return _significant(parts, bound, kind, alpha, min_count, n_threads, device, engine, coord)


def _significant(parts, bound, kind, alpha, min_count, n_threads, device, engine, coord):
    """The graph of the pairs of ``parts`` with q <= alpha: each part tested at the p cut
    of ``bound`` stored pairs, then the pairs kept cut at that of the pairs stored."""
    _check_graph_options(kind, alpha, min_count)
    kept, n_pairs, co, scorer, seen = [], 0, None, None, []
    for co in parts:
        seen.append(tuple(co.part))
        scorer = _Scorer(co, kind, n_threads, device, engine)
        kept.append(scorer.scored(_bh_cut(min(bound, co.n_tests), co.n_tests, alpha)))
        n_pairs += co.n_pairs
    if co is None:
        raise ValueError("No counts to build a graph from: `parts` is empty.")
    rank, size, n = coord.world.rank, coord.world.size, co.part[1]
    mine = [(k, n) for k in range(rank * (n // size), (rank + 1) * (n // size))]
    if n % size or seen != mine:
        raise ValueError(
            f"The counts are parts {[k for k, _ in seen]} of {n} of the pairs, not rank "
            f"{rank}'s {n // size} parts of {n} in order; count them with "
            f"`part`=({rank}, {size}) (count_in_parts)."
        )
    head = replace(co, counts=sp.csr_array(co.counts.shape, dtype=co.counts.dtype))
    row, col, a, p = _joined(kept, head.counts.dtype)  # empties `kept`
    del co, scorer  # the last part's counts
    s = np.flatnonzero(p <= _bh_cut(_total(coord, n_pairs), head.n_tests, alpha))
    row, col, a, p = coord.concat((row[s], col[s], a[s], p[s]))
    # q-values rank every pair under the exact cut; only those with q <= alpha and
    # enough joint firings can be edges, so affinities are computed for those alone
    q = benjamini_hochberg(p, n_tests=head.n_tests)
    s = np.flatnonzero((q <= alpha) & (a >= min_count))
    pairs = row[s], col[s], a[s], p[s]
    return _graph(head, pairs, kind, alpha, min_count, lambda usable, w, p, q: usable, q[s])


def densest_graph(
    co: Cooccurrence,
    n_edges: int,
    *,
    kind: str = "phi",
    alpha: float = 0.05,
    min_count: int = MIN_COUNT,
    n_threads: int | None = None,
    device: str | torch.device | None = None,
    engine: str = "auto",
    usable_only: bool = False,
    coord: Coordinator | None = None,
) -> FeatureGraph:
    """The ``n_edges`` pairs with the smallest p-values among those with positive
    affinity and at least ``min_count`` joint firings, significant or not (all of
    them when there are fewer): a null graph with as many edges as the real one.

    Modularity depends on a graph's density (a sparse random graph splits into
    tight, highly modular pieces; Guimera et al. 2004), so real and null graphs
    are compared at one density. The pairs are scored as in :func:`build_graph`,
    from its p cut, which is widened a hundredfold at a time until enough usable
    pairs pass it; ``alpha`` sets the first cut and the q-values reported.

    ``usable_only``: test only the pairs that can be edges (positive affinity, at
    least ``min_count`` joint firings). The edges, their weights and p-values are the
    same; the q-values are then ranked among those pairs only. The null graphs need
    no q-values, and on data without structure most pairs fire together a few times
    only: at 65k latents on 50k rows this skips nearly all tails.

    ``coord``: the ranks, each holding its part of the counts (as in :func:`build_graph`).
    """
    _check_graph_options(kind, alpha, min_count)
    if n_edges < 0:
        raise ValueError(f"`n_edges` must be >= 0, got {n_edges}.")
    coord = _check_coord(co, coord)
    scorer = _Scorer(co, kind, n_threads, device, engine, min_count if usable_only else 0)
    cut = _bh_cut(_total(coord, co.n_pairs), co.n_tests, alpha)
    pairs = scorer.scored(cut)
    while 0 < cut < 1:  # widen the p cut until enough usable pairs
        row, col, a, _ = pairs
        n_fire, n = co.n_fire, co.n_rows
        usable = (scorer.fn(a, n_fire[row], n_fire[col], n) > 0) & (a >= min_count)
        if _total(coord, usable.sum()) >= n_edges:
            break
        cut = min(1.0, cut * 100)
        pairs = scorer.scored(cut)

    def keep(usable, w, p, q):
        # the first n_edges usable pairs by smallest p, then larger affinity, then pair
        # order (a stable sort): only pairs with p up to the n_edges-th smallest need it
        ok = np.flatnonzero(usable)
        if 0 < n_edges < ok.size:
            ok = ok[p[ok] <= np.partition(p[ok], n_edges - 1)[n_edges - 1]]
        return ok[np.lexsort((-w[ok], p[ok]))][:n_edges]

    return _graph(co, coord.concat(pairs), kind, alpha, min_count, keep)


def _check_graph_options(kind: str, alpha: float, min_count: int) -> None:
    affinity_fn(kind)
    if not 0 < alpha <= 1:
        raise ValueError(f"`alpha` must lie in (0, 1], got {alpha}.")
    if min_count < 1 or int(min_count) != min_count:
        raise ValueError(f"`min_count` must be a positive integer, got {min_count!r}.")


def _bh_cut(n_pairs: int, n_tests: int, alpha: float) -> float:
    """The largest p-value one of ``n_pairs`` stored pairs (among ``n_tests``) can have
    and still reach ``q <= alpha``."""
    return alpha * n_pairs / n_tests if n_tests else -1.0


def _check_coord(co: Cooccurrence, coord: Coordinator | None) -> Coordinator:
    """``coord`` (a world of one by default), once it is known to hold one part of the
    counts per rank."""
    coord = coord if coord is not None else solo()
    rank, size = coord.world.rank, coord.world.size
    if tuple(co.part) != (rank, size):
        raise ValueError(
            f"The counts are part {co.part[0]} of {co.part[1]} of the pairs, but they are "
            f"tested as rank {rank} of {size}; count them with `part`=({rank}, {size}) "
            "(count_cooccurrence), or test counts of all pairs without `coord`."
        )
    return coord


def _total(coord: Coordinator, n: int) -> int:
    """``n`` added up over the ranks (a meeting)."""
    return sum(coord.gather(int(n), None))


class _Scorer:
    """Streams over the counted pairs and keeps those with ``p <= cut``."""

    def __init__(
        self,
        co: Cooccurrence,
        kind: str,
        n_threads: int | None,
        device: str | torch.device | None = None,
        engine: str = "auto",
        min_count: int = 0,
    ) -> None:
        self.co, self.fn, self.n_threads = co, affinity_fn(kind), _n_threads(n_threads)
        self.use_torch, self.device = _engine(engine, device)
        # > 0: only usable pairs (positive affinity, at least min_count joint firings)
        self.min_count = min_count

    def scored(self, cut: float) -> tuple[np.ndarray, ...]:
        """Pairs with p <= cut: (row, col, count, p)."""
        co = self.co
        n_fire, n = co.n_fire, co.n_rows
        if self.use_torch:
            kept = list(self._torch_scored(cut))
            return _joined(kept, self.co.counts.dtype)

        def candidates(bounds: tuple[int, int]) -> tuple[np.ndarray, ...]:
            _, row, col, a = chunk(co, *bounds)
            if self.min_count:
                u = np.flatnonzero(a >= self.min_count)
                u = u[self.fn(a[u], n_fire[row[u]], n_fire[col[u]], n) > 0]
                row, col, a = row[u], col[u], a[u]
            n_i, n_j = n_fire[row], n_fire[col]
            s = np.flatnonzero(log_pmf(a, n_i, n_j, n) <= np.log(cut))  # cut > 0: pairs exist
            p = hypergeom_upper_tail(a[s], n_i[s], n_j[s], n).p
            s, p = s[p <= cut], p[p <= cut]
            return row[s], col[s], a[s], p

        with ThreadPoolExecutor(max_workers=self.n_threads) as pool:
            kept = list(pool.map(candidates, chunk_rows(co.counts.indptr)))
        return _joined(kept, self.co.counts.dtype)

    def _torch_scored(self, cut: float):
        """:meth:`scored`'s candidates, chunk by chunk, tested on the device."""
        co = self.co
        log_cut = float(np.log(cut)) if cut > 0 else -np.inf
        for _, row, col, a, n_i, n_j in torch_chunks(co, self.device):
            if self.min_count:
                u = torch.nonzero(a >= self.min_count).squeeze(1)
                w = self.fn(*(x[u].cpu().numpy() for x in (a, n_i, n_j)), co.n_rows)
                u = u[torch.from_numpy(w > 0).to(u.device)]
                row, col, a, n_i, n_j = (x[u] for x in (row, col, a, n_i, n_j))
            s = torch.nonzero(th.log_pmf(a, n_i, n_j, co.n_rows) <= log_cut).squeeze(1)
            p = th.torch_upper_tail_tensors(a[s], n_i[s], n_j[s], co.n_rows)[0]
            s, p = s[p <= cut], p[p <= cut]
            yield (
                row[s].to(torch.int32).cpu().numpy(),
                col[s].to(torch.int32).cpu().numpy(),
                a[s].cpu().numpy().astype(co.counts.dtype),
                p.cpu().numpy(),
            )


def _joined(kept: list[tuple[np.ndarray, ...]], count_dtype) -> tuple[np.ndarray, ...]:
    """The chunks' (row, col, count, p) joined, field by field, each field's chunks dropped
    once joined (``kept`` is emptied): one dtype per field whatever the part's index
    width, so the ranks' parts join."""
    chunks = [list(k) for k in kept]
    kept.clear()
    out = []
    for f, dtype in enumerate((np.int32, np.int32, count_dtype, np.float64)):
        out.append(
            np.concatenate([k[f] for k in chunks]).astype(dtype, copy=False)
            if chunks
            else np.zeros(0, dtype)
        )
        for k in chunks:
            k[f] = None
    return tuple(out)


def _graph(
    co: Cooccurrence,
    pairs: tuple[np.ndarray, ...],
    kind: str,
    alpha: float,
    min_count: int,
    select: Callable[..., np.ndarray],
    q: np.ndarray | None = None,
) -> FeatureGraph:
    """The graph of the scored ``pairs`` that ``select(usable, w, p, q)`` keeps (``q``: their
    q-values, when they were ranked among more pairs than these)."""
    row, col, a, p = pairs
    n_fire, n = co.n_fire, co.n_rows
    if q is None:
        q = benjamini_hochberg(p, n_tests=co.n_tests)
    w = affinity_fn(kind)(a, n_fire[row], n_fire[col], n)
    s = select((w > 0) & (a >= min_count), w, p, q)
    row, col, a, p, q, w = row[s], col[s], a[s], p[s], q[s], w[s]
    d = co.d_sae
    upper = sp.coo_array((w, (row, col)), shape=(d, d))
    adjacency = (upper + upper.T).tocsr()
    adjacency.sort_indices()
    return FeatureGraph(
        adjacency=adjacency,
        kind=kind,
        alpha=float(alpha),
        min_count=int(min_count),
        n_tests=co.n_tests,
        n_rows=n,
        n_fire=n_fire,
        row=row,
        col=col,
        weight=w,
        count=a,
        p=p,
        q=q,
    )
