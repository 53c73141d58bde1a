"""The plain-correlation view: modules of units from their own correlations, no SAE.

The baseline an SAE atlas has to beat, or else say it adds nothing: the
configured finder (Leiden/Louvain on a correlation graph, the usual first step of
network analyses of neurons) on the units' squared raw Pearson correlations ``r^2``,
the share of variance two units share: the unsigned co-expression network of WGCNA
(Zhang & Horvath 2005) with power 2. Units that rise as others fall depend on each
other as much as units that rise together; the positive part of the correlations,
the graph before, dropped those pairs, so one bipolar axis showed as two
communities, its two sides, and the units of one task of a multitask network fell
into several modules (``bench/lesion.py``, two tasks, 10% of the weights, seed 2:
ARI 0.37 against the tasks; with ``r^2`` 1.00). The cleaned view keeps the positive
part (MacMahon & Garlaschelli 2015): without the global mode, a negative correlation
is less co-firing than the mode predicts, which is no tie (between two blocks that
share a mode, it is about half their correlation within). At every scale, on all
rows and on Poisson-bootstrap resamples of them
(:attr:`..graph.firing.UnitsMode.resampled`). Above
:data:`DENSE_UNITS` units each unit keeps only its :data:`UNIT_NEIGHBOURS` strongest
pairs (a k-nearest-neighbour graph, in every member and null draw alike). While the
consensus at the reported scale is undecided (:func:`undecided`), more resamples join
it, :data:`MEMBER_BATCH` at a time, up to ``UnitsMode.resampled``
(:func:`..graph.firing.view_members`). Consensus,
reproducibility and the reported scale follow the SAE ensemble
(:mod:`.consensus`), except that a scale tied in units covered with a finer one
is kept only when its partition has at least half the finer one's modularity
on the all-rows graph and no two of its modules are the two sides of one axis
(anti-correlated, :func:`opposition`; then the scale of highest modularity
among the reproducible partitions is reported: :func:`.consensus.choose_level`).
A reproducible group of the reported scale is a module only when its co-firing is
its own and not the mode all units share (:mod:`.shared_mode`): units that share
only a global mode's loadings form a group of the raw correlations, and pass the
test below, whose null breaks the mode too; and a coarser scale that joins such a
group to a module is not reported (:func:`.shared_mode.absorbs_mode_groups`).

Significance is judged against two null models (:mod:`.correlation_nulls`), on a block
of the analysed rows (up to ``null_rows``, and :data:`NULL_BLOCK_BYTES`; evenly spaced
blocks of them, as the SAE's nulls take theirs); the
partition and each module count only when they beat both:

- **independent units**: each null draw shifts every unit's column of the block
  circularly by its own random offset (the circular-shift surrogate of spike-train
  analysis), which keeps each unit's values, their heavy tails and their runs along
  the rows (the rows of one text are not independent), and breaks only the
  alignment between units;
- **no groups**: the block's correlations with their eigenvalues kept and their
  eigenvectors drawn at random (SigClust's null, Liu et al. 2008): as many factors,
  as strong, with loadings that form no groups. The first null is rejected by any
  correlated data; this one only where the units fall into groups, not where a few
  dense factors move them all and the finder cuts the cloud of their loadings.

The partition's figure is the best modularity the finder reaches over all its
scales, against the best it reaches on each null graph. A module's figure is, against
independent units, its cohesion beside the most cohesive group of its size the
null's best partition gives; against no groups, the share of its edge weight it keeps
inside (one minus its conductance: a group cut from a continuous cloud keeps less
than one that stands apart; cohesion passed ReLU'd factors) beside the null's groups
of its size cut at the reported scale, or the nearest scale that cuts one (the best
partition over all scales was often another scale, whose few groups of a small
module's size were the best of many: every task module of one pruned three-task
network failed; a coarse scale that leaves the null whole cuts no group). (For
the partition, the finder at the reported scale alone would not do: at a coarse scale it
leaves a noise graph whole, modularity 0 in every draw, and any real
modularity then beat a null of spread 0.) (Drawing the null
correlations as Gaussian noise ``N(0, 1/n)`` instead called independent
heavy-tailed units structured: |t3| x Bernoulli(0.2) units, 5,000 rows, beat
that null at z 2.4 to 77,000 in 2 of 4 seeds, through a few pairs whose
correlation one row of two extreme values makes.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ..._progress import progress_bar
from ..graph.finders import best_partition, make_levels
from ..graph.units import unit_correlation_graph
from .cohesion import (
    community_sizes,
    community_weights,
    kept_share,
    reappearing_cohesion,
    relative_spread,
    scale_matched_shares,
)
from .consensus import (
    REPRODUCIBLE,
    LevelConsensus,
    choose_level,
    level_consensus,
)
from .correlation_nulls import null_graphs
from .correlation_result import CorrelationView, keep_modules
from .partition_fit import opposition, partition_modularity
from .shared_mode import OWN_SHARE, absorbs_mode_groups, own_share
from .significance import NullTest, null_test, sampling_error, verdict

if TYPE_CHECKING:
    from ..._coordinator import Coordinator
    from ..inputs import AtlasInputs

log = logging.getLogger(__name__)


#: Units above which the correlation view warns that it may take hours (its cleaning's
#: eigendecompositions grow with the cube of the units).
MANY_UNITS = 4096

#: Units up to which the view's graphs hold every positive pair; above, each unit keeps
#: its :data:`UNIT_NEIGHBOURS` strongest (the finder's time grows with the edges: on one
#: core, 3 s for the four scales of one graph of 1,536 units with every pair, 0.14 s
#: with 32 neighbours each).
DENSE_UNITS = 2048
UNIT_NEIGHBOURS = 32


def unit_neighbours(n_units: int) -> int | None:
    """How many neighbours each unit keeps in the view's graphs (None: every pair)."""
    return UNIT_NEIGHBOURS if n_units > DENSE_UNITS else None


def correlation_view(inp: AtlasInputs, clean: bool = False) -> CorrelationView | None:
    """The correlation view of ``inp``'s rows (None when the units' correlation was not
    computed); computed once per rows and settings (the random-SAE control shares it).

    ``clean``: partition the correlations without their global mode and noise bulk
    (:func:`..graph.units.unit_correlation_graph`, after MacMahon & Garlaschelli 2015)
    instead of the raw ones: a strong global mode hides modules from the raw graph,
    and the raw graph shows groups that share the mode's loadings."""
    cfg, mode = inp.cfg, inp.mode
    if mode.corr is None:
        return None
    key = (
        "correlation",
        clean,
        cfg.method,
        cfg.resolutions,
        cfg.min_module_features,
        cfg.seed,
        cfg.nulls,
        cfg.n_null,
        cfg.alpha,
    )
    if key not in mode.views:
        if not clean and mode.corr.shape[0] > MANY_UNITS and inp.coord.world.is_main:
            log.warning(
                "The units' correlation view decomposes the correlations of the %s units "
                "for each of its members and null draws, a cost that grows with the cube "
                "of the units (on 2 CPU cores about 4 minutes at 3,072 units, so about "
                "half an hour at 6,144): this analysis may take hours on a CPU. --device "
                "cuda decomposes them on the GPU; or map fewer layers at a time (a store "
                "of fewer --layers).",
                f"{mode.corr.shape[0]:,}",
            )
        # members and null draws; at thousands of units each takes seconds or more
        n_items = mode.view_start + (
            len(NULLS) * cfg.n_null if cfg.nulls and cfg.n_null >= 2 else 0
        )
        name = "units' cleaned correlations" if clean else "units' correlations"
        with progress_bar(name, n_items, inp.progress) as bar:
            mode.views[key] = _correlation_view(inp, clean, bar.advance, bar.grow)
    return mode.views[key]


#: The view's null models: (name, eigenvectors drawn at random) (:mod:`.correlation_nulls`).
NULLS = (
    ("independent units (circular shifts)", False),
    ("no groups (eigenvectors at random)", True),
)

#: Members the correlation view adds at a time while its consensus is undecided.
MEMBER_BATCH = 6


def undecided(level: LevelConsensus) -> bool:
    """Whether more members could change the modules ``level`` would report: it has
    reproducible modules, and a module's reproducibility, or the co-assignment
    (``membership``) of a unit of a reproducible module, is within two binomial
    standard errors (of a fraction of the members) of its cut,
    :data:`.consensus.REPRODUCIBLE` and 0.5 (the co-assignment at which the consensus
    joins two units). A level without reproducible modules reports none, and no
    member is added to look for one."""
    n = max(level.members.shape[0], 1)
    on = level.reproducible_labels() >= 0
    if not on.any():
        return False

    def near(p: np.ndarray, cut: float) -> bool:
        return bool((np.abs(p - cut) < 2 * np.sqrt(p * (1 - p) / n)).any())

    return near(level.reproducibility, REPRODUCIBLE) or near(level.membership[on], 0.5)


def _correlation_view(
    inp: AtlasInputs,
    clean: bool,
    on_item: Callable[[], None] | None = None,
    on_grow: Callable[[int], None] | None = None,
) -> CorrelationView:
    cfg, mode = inp.cfg, inp.mode
    n_obs = max(mode.n_samples, 2)
    correlations = (mode.corr, *mode.resampled)
    # cfg.device: under torchrun "cuda" is already this rank's GPU (inputs.analysis_ranks)
    k, dev = unit_neighbours(mode.corr.shape[0]), cfg.device
    real = unit_correlation_graph(mode.corr, n_obs, clean, k, dev, unsigned=not clean)
    finders = make_levels(cfg)

    def member(i: int) -> list[tuple]:  # [level] (labels, modularity, :mod:`.cohesion`)
        g = (
            real
            if i == 0
            else unit_correlation_graph(correlations[i], n_obs, clean, k, dev, unsigned=not clean)
        )
        fits = [f.fit(g) for f in make_levels(cfg, i)]
        return [
            (
                r.labels_,
                float(r.modularity_),
                community_weights(g, r.labels_),
                community_sizes(r.labels_),
            )
            for r in fits
        ]

    # the members (all rows, resamples) are shared among the ranks of a torchrun analysis;
    # while the reported scale's consensus is undecided, more resamples join (every rank
    # decides alike)
    per_member = inp.coord.spread(mode.view_start, member, on_item)
    while True:
        levels = [
            level_consensus(
                np.stack([m[i][0] for m in per_member]),
                getattr(finders[i], "resolutions", (None,))[0],
                random_state=cfg.seed,
            )
            for i in range(len(finders))
        ]
        reps = [lv.reproducible_labels() for lv in levels]
        quality = [partition_modularity(real, r) for r in reps]
        opposed = [opposition(mode.corr, r, not clean) for r in reps]
        # with a mode every unit shares, each group's share of its co-firing that is its own
        shares = None if mode.mode is None else [own_share(mode.corr, r, not clean) for r in reps]
        absorbs = None if shares is None else absorbs_mode_groups(reps, shares)
        chosen = choose_level(levels, [m[1] for m in per_member[0]], quality, opposed, absorbs)
        done = len(per_member)
        if done == len(correlations) or not undecided(levels[chosen]):
            break
        more = min(MEMBER_BATCH, len(correlations) - done)
        if on_grow is not None:
            on_grow(more)
        per_member += inp.coord.spread(more, lambda j, d=done: member(d + j), on_item)
    # with a mode every unit shares, a group that co-fires only through it is no module
    labels, own = reps[chosen], None if shares is None else shares[chosen]
    labels = labels if own is None else keep_modules(labels, own >= OWN_SHARE)
    n_mod = int(labels.max(initial=-1)) + 1
    tests: tuple[NullTest, ...] = ()
    if cfg.nulls and cfg.n_null >= 2:
        # every scale: at one coarse scale a noise graph is one module, Q 0 in every
        # draw, so any real Q beat it with a spread of 0
        fit = functools.partial(best_partition, cfg)
        graphs = null_graphs(inp, k)

        def null_graph(rotate: bool, i: int, _: Coordinator | None) -> sp.csr_matrix:
            return graphs.graph(clean, i, rotate)  # counts no pairs

        block_graph = graphs.graph(clean, None)
        at_scale = functools.partial(scale_matched_shares, finders=finders, scale=chosen)
        # the statistic's sampling error: its spread over the members (rows resampled)
        q_se = sampling_error([max(lv[1] for lv in m) for m in per_member])
        spread = relative_spread(
            [
                reappearing_cohesion(w, n, u, labels)
                for u, _, w, n in (m[chosen] for m in per_member)
            ]
        )
        tests = tuple(
            null_test(
                name,
                block_graph,
                labels,
                fit,
                functools.partial(null_graph, rotate),
                cfg.n_null,
                on_draw=on_item,
                coord=inp.coord,
                q_se=q_se,
                # against no groups, what a module keeps of its weight, beside groups of
                # its size that the finder cuts at the module's own scale (cohesion
                # passed ReLU'd factors)
                module_spread=None if rotate else spread,
                figures=(kept_share, at_scale) if rotate else None,
            )
            for name, rotate in NULLS
        )
    # the partition and each module against both nulls
    partition_ok, module_ok, module_p = verdict(list(tests), cfg.alpha)
    if not tests:
        module_ok, module_p = np.zeros(n_mod, bool), np.full(n_mod, np.nan)
    return CorrelationView(
        levels, chosen, tests, partition_ok, module_ok, module_p, clean, tuple(opposed), own
    )
