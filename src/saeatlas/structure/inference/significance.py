"""Is the modular structure real? Modularity against null models, per partition and module.

For every null model the same statistic is computed on real and null data
built from the same number of rows, and on graphs of the same density (null
graphs built from data keep as many of their most significant pairs as the real
graph has edges; rewiring keeps the edges themselves): a sparse graph splits
into tight pieces and scores a high modularity whatever made it.

- partition: the modularity Q of the best partition the finder reaches on the
  graph over all its scales (re-optimised on every null graph, so the null's own
  best chance is counted, as in Guimerà et al. 2004, "Modularity from fluctuations
  in random graphs"), or that of the tested modules where higher;
- module: each found module's cohesion, the edge weight inside it per member
  (half its members' mean weighted degree within it), against the most
  cohesive group of the module's size the finder's communities on each null
  graph give (so a real module must outweigh the strongest structure of its
  size the null can fake, artefact groups of split latents included; taking the
  maximum also covers the number of modules tested). Modularity terms would
  mislead here: on a null graph with almost no edges one stray edge inside a
  module makes its term large. Cohesion grows with a group's size, so sizes are
  matched both ways (:func:`strongest_fakes`). From above: communities larger
  than the largest module tested are left out; on rewired null graphs the finder
  returns one community of every feature, whose cohesion (half the mean degree)
  beat every real module of below-average degree, so of eight separate planted
  modules 3-6 were called significant, another set each seed. From below: a
  community of fewer members than the module counts as a group of the module's
  size holding its edges (its internal weight over the module's members: adding
  members to a group keeps the edges inside it). Counted at its own size, a
  clique of three to six latents that some draws of the dictionary null made
  (edge weights 0.7-0.9) outweighed modules of twenty latents in superposed
  ReLU data, and the modules' verdict changed with the seed (such cliques of
  latents silent on the real rows are now left out of that null: :mod:`.nulls`).

From ``n`` null draws: the null mean and spread, ``z = (Q - mean) / std``, a
parametric one-sided p-value and the empirical one ``(1 + #{null >= real}) /
(1 + n)`` (reported; it cannot go below ``1 / (1 + n)``, so the verdicts use the
parametric one). The parametric p-value treats the real figure as one more draw
against a normal null whose mean and spread are estimated from the ``n`` draws:
``P(T >= z / sqrt(1 + 1/n))`` for Student's ``T`` with ``n - 1`` degrees of
freedom (a prediction interval; with 5 draws z = 3 gives p = 0.02, where the
normal tail would claim 0.001). A null whose draws have no spread has no z and
no normal fit: its p-value is the empirical one (:mod:`.draws`). A partition is
significant when every null rejects it at ``alpha``; a module when its partition
is and its Benjamini-Hochberg-adjusted p-values are below ``alpha`` under every null.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import t as student_t

from ..._coordinator import Coordinator, solo
from ..._progress import progress_bar
from ...errors import ConfigError
from ..constants import BLOCK_ROWS
from ..graph.communities import Modules, cooccurrence_graph, counts_in_parts, graph_items
from ..graph.edges import MIN_COUNT
from ..graph.finders import best_partition, module_modularity
from ..graph.hypergeom import benjamini_hochberg
from .cohesion import community_sizes, module_cohesion, module_weight
from .draws import draws_p, draws_z, rank_p
from .nulls import NULL_MODELS, NullInputs, dictionary_source

if TYPE_CHECKING:
    from ..inputs import AtlasInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NullTest:
    """One null model's verdict on a partition and its modules."""

    name: str
    q: float
    """Modularity of the real graph's best partition."""
    null_q: np.ndarray
    """``[n_draws]`` the best modularity reached on each null graph."""
    module_w: np.ndarray
    """``[n_modules]`` each module's cohesion on the real graph."""
    null_module_w: np.ndarray
    """``[n_draws, n_modules]`` the most cohesive group of each module's size on each
    null graph (:func:`strongest_fakes`)."""
    q_se: float = float("nan")
    """The sampling error of ``q`` (its spread over the ensemble's members; NaN: not
    known): the floor of the null's spread in ``z`` (:mod:`.draws`)."""
    module_se: np.ndarray | None = None
    """``[n_modules]`` the sampling error of each module's cohesion (NaN or None: not
    known), the floor of the spread in its ``z`` (:mod:`.cohesion`)."""

    @property
    def null_mean(self) -> float:
        return float(self.null_q.mean()) if self.null_q.size else float("nan")

    @property
    def null_std(self) -> float:
        return float(self.null_q.std(ddof=1)) if self.null_q.size > 1 else float("nan")

    @property
    def z(self) -> float:
        """NaN where neither the draws nor ``q`` have a spread (:func:`.draws.draws_z`)."""
        return draws_z(self.q, self.null_q, self.q_se)

    @property
    def p(self) -> float:
        """Parametric one-sided p-value from the null's mean and spread (the empirical
        one where there is no spread)."""
        return draws_p(self.q, self.null_q, _t_tail, self.q_se)

    @property
    def p_empirical(self) -> float:
        """``(1 + #{null >= real}) / (1 + n_draws)``."""
        return rank_p(self.q, self.null_q)

    def _module_se(self) -> np.ndarray:
        if self.module_se is None:
            return np.full(self.module_w.size, np.nan)
        return self.module_se

    def module_z(self) -> np.ndarray:
        se, fakes = self._module_se(), self.null_module_w.T
        return np.array(
            [draws_z(w, f[np.isfinite(f)], s) for w, f, s in zip(self.module_w, fakes, se)]
        )

    def module_p(self) -> np.ndarray:
        """Draws without a group to compare (NaN) left out."""
        se, fakes = self._module_se(), self.null_module_w.T
        return np.array(
            [draws_p(w, f[np.isfinite(f)], _t_tail, s) for w, f, s in zip(self.module_w, fakes, se)]
        )

    def as_dict(self) -> dict[str, float | str]:
        return {
            "null": self.name,
            "modularity": self.q,
            "null_mean": self.null_mean,
            "null_std": self.null_std,
            "modularity_se": None if np.isnan(self.q_se) else self.q_se,
            "z": self.z if np.isfinite(self.z) else None,  # None: no spread
            "p": self.p,
            "p_empirical": self.p_empirical,
            "n_draws": int(self.null_q.size),
        }


def _t_tail(z: float, n: int) -> float:
    """``P(T >= z / sqrt(1 + 1/n))``, ``T`` Student's with ``n - 1`` degrees of freedom."""
    return float(student_t.sf(z / np.sqrt(1 + 1 / n), n - 1))


def null_test(
    name: str,
    real_graph: sp.spmatrix,
    labels: np.ndarray,
    fit: Callable[[sp.spmatrix], tuple[float, np.ndarray]],
    null_graphs: Callable[[int, Coordinator | None], sp.spmatrix],
    n_draws: int,
    on_draw: Callable[[], None] | None = None,
    coord: Coordinator | None = None,
    in_parts: bool = False,
    q_se: float = float("nan"),
    module_spread: np.ndarray | None = None,
    figures: tuple[Callable, Callable] | None = None,
) -> NullTest:
    """Compare ``labels`` on ``real_graph`` with ``n_draws`` graphs from
    ``null_graphs(i, c)``.

    ``fit(graph)`` returns the modularity the finder reaches on a graph and its
    labels; the real figure is the larger of that and the modularity of
    ``labels`` themselves. ``on_draw()`` is called after each null draw (progress).
    ``q_se``: the sampling error of that figure, where known (:attr:`NullTest.q_se`);
    ``module_spread``: each module's cohesion's sampling error relative to it
    (:func:`.cohesion.relative_spread`), where known.
    ``coord``: the ranks of a ``torchrun`` analysis, among which the draws are shared
    out (``c`` None: a draw's graph is counted whole by its rank), or with
    ``in_parts`` drawn one after another by all of them, each graph's pairs counted in
    parts (``c = coord``; :func:`..graph.communities.graph_items`). Draw ``i`` must
    depend on ``i`` alone (its seed is derived from it).
    """
    q = max(fit(real_graph)[0], float(module_modularity(real_graph, labels).sum()))
    figure, fakes_of = figures or (module_cohesion, strongest_fakes)
    mw = figure(real_graph, labels)
    sizes = community_sizes(labels)

    def draw(i: int, c: Coordinator | None) -> tuple[float, np.ndarray]:
        g = null_graphs(i, c)
        null_q, null_labels = fit(g)
        return float(null_q), fakes_of(g, null_labels, sizes)

    coord = coord if coord is not None else solo()
    draws = graph_items(n_draws, draw, coord, in_parts, on_item=on_draw)
    null_q = np.array([q for q, _ in draws], dtype=np.float64)
    fakes = np.array([f for _, f in draws], dtype=np.float64).reshape(n_draws, sizes.size)
    se = None
    if module_spread is not None:
        spread = np.full(mw.size, np.nan)
        known = np.asarray(module_spread, dtype=np.float64)[: mw.size]
        spread[: known.size] = known
        se = mw * spread
    return NullTest(name, q, null_q, mw, fakes, q_se, se)


def strongest_fakes(graph: sp.spmatrix, labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``[len(sizes)]`` for each module size ``m``, the most cohesive group of ``m``
    members the communities ``labels`` of a null graph give (0 where none can).

    Only communities no larger than the largest module tested count (a group's
    cohesion grows with its size, and one community of every item is no module). A
    community of at least ``m`` members counts its own cohesion; one of fewer counts
    its internal weight over ``m`` members, the cohesion of the group of ``m`` made of
    it and any others, whose edges add to that weight and are not counted."""
    sizes = np.asarray(sizes, dtype=np.int64)
    weight = module_weight(graph, labels)
    count = community_sizes(labels)[: weight.size]
    keep = (count > 0) & (count <= sizes.max(initial=0))
    out = np.zeros(sizes.size)
    if not keep.any() or not sizes.size:
        return out
    weight, count = weight[keep], count[keep]
    order = np.argsort(count, kind="stable")
    weight, count = weight[order], count[order]
    # as large as m or larger: the best cohesion from there on; smaller: the best weight
    cohesion_from = np.maximum.accumulate((weight / count)[::-1])[::-1]
    weight_below = np.maximum.accumulate(weight)
    first = np.searchsorted(count, sizes, side="left")  # the first community of >= m
    at_least = np.where(first < count.size, cohesion_from[np.minimum(first, count.size - 1)], 0)
    below = np.where(first > 0, weight_below[np.maximum(first - 1, 0)], 0) / np.maximum(sizes, 1)
    return np.maximum(at_least, below)


def strictness(p: float | None, z: float | None) -> tuple[float, float]:
    """Sort key of one null's test (the strictest is the largest): its p-value (None or
    NaN: 1), then the smaller z (None or NaN, the draws had no spread: last)."""
    p = 1.0 if p is None or np.isnan(p) else float(p)
    return p, -(float(z) if z is not None and np.isfinite(z) else np.inf)


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (Benjamini & Hochberg 1995) of module tests;
    a test that could not be made (NaN) counts as p = 1."""
    return benjamini_hochberg(np.nan_to_num(np.asarray(p, dtype=float), nan=1.0))


def verdict(tests: list[NullTest], alpha: float) -> tuple[bool, np.ndarray, np.ndarray]:
    """``(partition significant, module significant [n_modules], module p [n_modules])``:
    the module p-value is the largest adjusted one over the nulls."""
    if not tests:
        return False, np.zeros(0, bool), np.zeros(0)
    partition = all(t.p < alpha for t in tests)
    adjusted = np.stack([bh_adjust(t.module_p()) for t in tests])  # [n_nulls, n_modules]
    worst = np.nan_to_num(adjusted, nan=1.0).max(axis=0)
    return partition, (worst < alpha) & partition, worst


def tested_modularity(s: dict[str, Any]) -> float | None:
    """The modularity the null models were compared with: the finder's best partition
    before its communities are cut to their cores (``summary["modularity"]`` in atlases
    made since the ensemble; older atlases held the cores' there)."""
    tested = {n["null"]: n.get("modularity") for n in s.get("nulls", [])}
    return tested.get(s.get("strictest_null"), s.get("modularity"))


def sampling_error(values: np.ndarray) -> float:
    """The standard deviation of a figure over resamples (NaN with fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")


def significance_tests(
    inp: AtlasInputs,
    found: Modules,
    labels: np.ndarray | None = None,
    q_se: float = float("nan"),
    module_spread: np.ndarray | None = None,
) -> tuple[list[NullTest], str | None]:
    """Test the atlas's partition ``found`` against every null model of ``inp.cfg.nulls``
    (:data:`.nulls.NULL_MODELS`), ``n_null`` draws each, on ``null_rows`` rows.
    ``labels``: the feature modules whose cohesion is tested (default: ``found``'s);
    ``q_se``: the sampling error of the partition's modularity (:attr:`NullTest.q_se`);
    ``module_spread``: that of each module's cohesion, relative to it (:func:`null_test`).

    Under ``torchrun`` the real graph is counted in parts by all ranks together. The
    draws of the nulls that count pairs (permutation, dictionary) are shared out among
    the ranks, each graph counted whole by its rank, or for a dictionary of at least
    ``cfg.count_in_parts_from`` latents drawn by all ranks together, one after another,
    each graph counted in parts (every rank then synthesises a dictionary draw's rows
    and fits the finder itself); rewiring draws are always shared out.

    Returns the tests (none when nulls are off) and the dictionary null's source, named.
    """
    cfg = inp.cfg
    if not cfg.nulls or cfg.n_null == 0:
        return [], None
    models = [NULL_MODELS[name] for name in cfg.nulls]
    source = dictionary_source(inp) if any(m.needs_source for m in models) else None
    codes = inp.main.codes
    rows = subsample_rows(codes.n_rows, cfg.null_rows)
    fires, samples = inp.main.fires[rows], codes.samples[rows]
    real = cooccurrence_graph(fires, samples, cfg, coord=inp.coord).adjacency  # counted in parts
    if real.nnz == 0 and found.graph.adjacency.nnz:
        # every null graph is built as dense as this one: each draw and the real partition
        # would score 0, and the verdict said "does not beat the null models"
        raise ConfigError(
            f"The co-occurrence graph of the {rows.size:,} rows the null models compare "
            f"(`null_rows`, --null-rows {cfg.null_rows:,}) has no edges, though the graph "
            f"of all {codes.n_rows:,} rows has {found.graph.adjacency.nnz // 2:,}: the nulls "
            "would test nothing. Raise --null-rows (default 50,000)."
        )
    null_inputs = NullInputs(
        fires=fires,
        samples=samples,
        rows=rows,
        real=real,
        n_edges=real.nnz // 2,  # null graphs are built as dense as the real one
        sae=inp.sae,
        excluded=inp.main.excluded,
        silent=np.bincount(fires.indices, minlength=fires.shape[1]) < MIN_COUNT,
        cfg=cfg,
        source=source,
    )

    # Every scale, not the reported one alone: at the coarsest (the scales tied on the
    # real graph) Leiden merged the dictionary null's graphs into two to four
    # communities, modularity 0.28-0.59 over five draws where every scale's best was
    # 0.59, and that spread, not the real partition, decided the test.
    fit = functools.partial(best_partition, cfg)

    in_parts = counts_in_parts(cfg, fires.shape[1], inp.coord)
    tests = []
    with progress_bar("null models", len(cfg.nulls) * cfg.n_null, inp.progress) as bar:
        for k, (name, model) in enumerate(zip(cfg.nulls, models)):
            seeds = np.random.SeedSequence([cfg.seed, k]).spawn(cfg.n_null)
            tests.append(
                null_test(
                    name,
                    real,
                    found.feature_module if labels is None else labels,
                    fit,
                    lambda i, c, model=model, seeds=seeds: model.draw(
                        null_inputs, np.random.default_rng(seeds[i]), c
                    ),
                    cfg.n_null,
                    on_draw=bar.advance,
                    coord=inp.coord,
                    in_parts=in_parts and model.counts_pairs,
                    q_se=q_se,
                    module_spread=module_spread,
                )
            )
            log.info("null %s: z %.2f p %.3g", name, tests[-1].z, tests[-1].p)
    return tests, source.name if source else None


def subsample_rows(n_rows: int, n_keep: int) -> np.ndarray:
    """Evenly spaced contiguous blocks of rows, ``n_keep`` rows in all (sorted)."""
    if n_keep >= n_rows:
        return np.arange(n_rows)
    n_blocks = max(1, n_keep // BLOCK_ROWS)
    starts = np.linspace(0, n_rows - BLOCK_ROWS, n_blocks).round().astype(int)
    rows = np.unique((starts[:, None] + np.arange(BLOCK_ROWS)[None, :]).ravel())
    return rows[rows < n_rows][:n_keep]
