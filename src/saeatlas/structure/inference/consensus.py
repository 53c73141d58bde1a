"""Modules that an ensemble of partitions agrees on, at every scale, and the scale to keep.

An ensemble's members each partition the same units at several scales (a
resolution of the community finder, coarsest first). At every scale:

- **consensus**: the co-assignment graph of the members (the fraction of members
  that put two units in one module, kept where at least half do), partitioned by
  Leiden: the consensus clustering of Lancichinetti & Fortunato 2012
  ("Consensus clustering in complex networks", Sci. Rep. 2, 336), one round;
  with a threshold of one half, pairs that most members separate never join.
- **membership**: a unit's mean co-assignment with the other units of its
  consensus module (1: every member puts them together).
- **reproducibility** of a consensus module: the fraction of members that have a
  module matching it at Jaccard >= 0.5 (Hennig 2007, "Cluster-wise assessment of
  cluster stability": 0.5 is where a cluster counts as recovered). A module is
  reproducible when at least 0.75 of the members recover it.
- **agreement**: the mean adjusted Rand index over pairs of members. At a scale
  where it is below :data:`MIN_AGREEMENT` no module counts as reproducible: the
  members divide the units in unrelated ways, and the consensus of such
  partitions is itself a draw (two analyses of one network, with other seeds,
  gave different consensus modules there, each "recovered" by most members
  because a large member module overlaps any large consensus module at
  Jaccard 0.5).

The scale is chosen for reproducibility, not for the modularity of one run
(stability-based model selection, Lange et al. 2004, "Stability-based
validation of clustering solutions"; von Luxburg 2010, "Clustering stability:
an overview"): among the scales at which the consensus has at least two
modules, the one whose reproducible modules hold the most units; within
:data:`COVERAGE_TIE` of the best, the coarsest, so that sub-modules are reported
under their module and not in its place (where the units are the nodes of the
partitioned graph, as in the correlation view, a tied scale also needs at least
half the best tied scale's modularity: see :func:`choose_level`); and above
that scale, the coarsest scale whose reproducible modules are a coarser level of
its modules (:func:`nests_under`), which then are the sub-modules
(:func:`finer_level`). (The members' mean pairwise ARI, the
usual stability score, is reported as ``agreement`` but not used to choose:
members that split a module differently agree poorly even when their consensus
recovers every module, as on planted data in superposition.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..constants import DISSOLVED_JACCARD, STABLE_JACCARD
from ..graph.finders import relabel
from .partitions import best_match_jaccard, consensus_partition, partition_ari

#: Scales whose reproducible modules hold at least this fraction less than the best
#: scale's count as ties, won by the coarser scale.
COVERAGE_TIE = 0.05
#: Scales tied in coverage whose ``tie_quality`` is under this fraction of the best tied
#: one's are not kept as the coarse level (:func:`choose_level`).
TIE_QUALITY = 0.5
#: Tied scales whose most anti-correlated pair of modules opposes each other more than
#: this (between-module mean correlation over the within-module one) are not kept.
MAX_OPPOSED = 0.25
#: A finer scale's module lies under a coarser scale's that holds this fraction of its
#: units the coarser scale places in a reproducible module (:func:`nests_under`) ...
NESTED = 0.75
#: ... when the coarser scale places at least this fraction of them.
NESTED_PLACED = 0.5
#: A member recovers a module when one of its modules matches it at least this well.
RECOVERED_JACCARD = DISSOLVED_JACCARD
#: A module is reproducible when at least this fraction of members recover it.
REPRODUCIBLE = STABLE_JACCARD
#: Members' mean pairwise ARI below which no module of a scale is reproducible.
MIN_AGREEMENT = 0.5


@dataclass(frozen=True)
class LevelConsensus:
    """The ensemble's consensus at one scale."""

    scale: float | None
    """The finder's resolution at this scale (None for a finder without one)."""
    members: np.ndarray
    """``[n_members, n_units]`` each member's unit modules (-1: none)."""
    labels: np.ndarray
    """``[n_units]`` consensus modules (-1: in none), numbered by size."""
    membership: np.ndarray
    """``[n_units]`` mean co-assignment with the other units of the consensus module."""
    reproducibility: np.ndarray
    """``[n_modules]`` fraction of members recovering each consensus module."""
    agreement: float
    """Mean pairwise ARI of the members (NaN with fewer than two)."""

    @property
    def n_modules(self) -> int:
        return int(self.labels.max(initial=-1)) + 1

    @property
    def coverage(self) -> int:
        """Units in reproducible modules."""
        return int((self.reproducible_labels() >= 0).sum())

    @property
    def reproducible(self) -> np.ndarray:
        """``[n_modules]`` bool: recovered by at least :data:`REPRODUCIBLE` of members, at
        a scale whose members agree (:data:`MIN_AGREEMENT`; one member always does)."""
        agree = not self.agreement < MIN_AGREEMENT  # NaN (one member) passes
        return (self.reproducibility >= REPRODUCIBLE - 1e-12) & agree

    def reproducible_labels(self) -> np.ndarray:
        """``labels`` with the modules that are not reproducible set to -1, renumbered
        by size; the order of :meth:`reproducible_modules`."""
        keep = self.reproducible_modules()
        new = np.full(self.n_modules + 1, -1)
        new[keep] = np.arange(keep.size)
        return new[self.labels]  # label -1 indexes the trailing -1

    def reproducible_modules(self) -> np.ndarray:
        """Indices of the reproducible consensus modules, largest first."""
        sizes = np.bincount(self.labels[self.labels >= 0], minlength=self.n_modules)
        keep = np.flatnonzero(self.reproducible)
        return keep[np.argsort(-sizes[keep], kind="stable")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "n_members": int(self.members.shape[0]),
            "member_n_modules": [int(m.max(initial=-1)) + 1 for m in self.members],
            "n_consensus_modules": self.n_modules,
            "n_reproducible_modules": int(self.reproducible.sum()),
            "units_in_reproducible_modules": self.coverage,
            "reproducibility": [round(float(r), 4) for r in self.reproducibility],
            "agreement": None if not np.isfinite(self.agreement) else float(self.agreement),
        }


def level_consensus(
    members: np.ndarray, scale: float | None = None, *, random_state: int | None = 0
) -> LevelConsensus:
    """The consensus of ``members`` ``[n_members, n_units]`` (unit modules, -1 none)."""
    members = np.asarray(members, dtype=np.int64)
    labels = consensus_partition(
        members, 0.5, min_size=2, method="leiden", random_state=random_state
    )
    labels = relabel(labels, 2)
    pairs = [partition_ari(a, b) for a, b in itertools.combinations(members, 2)]
    pairs = [p for p in pairs if np.isfinite(p)]
    return LevelConsensus(
        scale=scale,
        members=members,
        labels=labels,
        membership=membership(labels, members),
        reproducibility=recovered_fraction(labels, members),
        agreement=float(np.mean(pairs)) if pairs else float("nan"),
    )


def recovered_fraction(labels: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``[n_modules]`` the fraction of ``members`` that recover each module of ``labels``:
    have a module matching it at Jaccard >= :data:`RECOVERED_JACCARD`."""
    n_modules = int(labels.max(initial=-1)) + 1
    recovered = np.zeros(n_modules)
    for m in members:
        recovered += best_match_jaccard(labels, m, n_modules=n_modules) >= RECOVERED_JACCARD
    return recovered / max(len(members), 1)


def membership(labels: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``[n_units]`` each unit's mean co-assignment with the rest of its consensus module."""
    out = np.zeros(labels.size)
    on = labels >= 0
    if not on.any():
        return out
    n_modules = int(labels.max()) + 1
    size = np.bincount(labels[on], minlength=n_modules)
    together = np.zeros(labels.size)
    for run in members:
        # pairs (u, v), v in u's consensus module, that this member puts in one module:
        # count, per (consensus module, member module), the units in both
        both = on & (run >= 0)
        key = labels[both] * (int(run.max(initial=-1)) + 1) + run[both]
        uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        together[np.flatnonzero(both)] += counts[inv] - 1
    partners = np.maximum(size[labels.clip(0)] - 1, 1)
    out[on] = together[on] / (len(members) * partners[on])
    return out


def choose_level(
    levels: list[LevelConsensus],
    modularity: list[float] | None = None,
    tie_quality: list[float] | None = None,
    opposed: list[float] | None = None,
    excluded: list[bool] | None = None,
) -> int:
    """Index of the scale to report (see the module docstring); ``levels`` coarsest first.

    When no scale has reproducible modules, the scale at which the analysed run's
    partition has the highest ``modularity`` (one per level; default: the members'
    best agreement): the partition then tested against the null models is the
    finder's best chance of showing structure, not a near-trivial coarse one.

    ``tie_quality`` (one per level): among the scales tied in coverage, those whose
    quality is under :data:`TIE_QUALITY` of the best tied one's drop out (the
    coarsest of the rest wins). The correlation view passes the modularity of each
    scale's reproducible partition on the graph it partitions (:mod:`.correlation`):
    there the units are the graph's nodes, and a coarse partition that covers as
    many units but keeps under half the community structure a finer one shows
    (modularity 0.00 against 0.40 on one pruned three-task network of
    ``bench/lesion.py``) is not the coarse level of that structure.

    ``opposed`` (one per level, with ``tie_quality``): how strongly the level's most
    anti-correlated pair of reproducible modules opposes each other
    (:func:`.correlation.opposition`). A tied scale with a pair opposed more than
    :data:`MAX_OPPOSED` drops out too: a graph of the positive part of the
    correlations splits one bipolar axis (units that rise as others fall) into two
    communities, its two sides, and such a split is not a coarse level of modules.
    ``excluded`` (one per level, with ``tie_quality``): scales that drop out as well
    (the correlation view's scales that join units held only by a global mode to a
    module, :func:`.shared_mode.absorbs_mode_groups`).
    When every tied scale drops out, the scale whose reproducible partition has the
    highest ``tie_quality`` is reported (the finder's best-modularity scale, among
    those the ensemble reproduces). Measured on 32 pruned networks of
    ``bench/lesion.py`` (the README's "Modules against tasks"): the two-module coarse
    splits that cut across the tasks opposed their halves at 0.30-0.69, the
    two-module coarse levels that are the tasks at 0.00-0.11.
    """
    scores = np.array([lv.coverage if lv.n_modules >= 2 else -1 for lv in levels])
    if scores.max(initial=-1) <= 0:
        if modularity is not None:
            return int(np.argmax(modularity))
        agree = [lv.agreement if np.isfinite(lv.agreement) else -np.inf for lv in levels]
        return int(np.argmax(agree))
    tied = np.flatnonzero(scores >= (1 - COVERAGE_TIE) * scores.max())
    kept = np.ones(len(levels), bool)  # scales that may be reported at all
    if tie_quality is not None:
        q = np.asarray(tie_quality, dtype=float)
        if q[tied].max() > 0:
            kept &= q >= TIE_QUALITY * q[tied].max()
        if opposed is not None:
            kept &= np.asarray(opposed, dtype=float) <= MAX_OPPOSED
        if excluded is not None:
            kept &= ~np.asarray(excluded, dtype=bool)
        tied = tied[kept[tied]]
        if opposed is not None and not tied.size:
            return int(np.argmax(np.where(scores > 0, q, -np.inf)))
    best = int(tied[0])
    parents = [i for i in range(best) if kept[i] and nests_under(levels[best], levels[i])]
    return parents[0] if parents else best


def nests_under(fine: LevelConsensus, coarse: LevelConsensus) -> bool:
    """Whether ``coarse``'s reproducible modules are a coarser level of ``fine``'s: it has
    at least two, every reproducible module of ``fine`` lies inside one of them (of
    its units that ``coarse`` places in a reproducible module, at least
    :data:`NESTED`; and it places at least :data:`NESTED_PLACED` of them), and at
    least one of them holds two or more.

    The scale whose reproducible modules hold the most units is a finer one when a
    coarse level covers fewer units (on planted modules grouped in pairs that fire
    together, ``PlantedConfig(n_parents=...)``, the pairs held 108 units and the
    modules 114, 5.3% more; with SAEs trained on two threads, 107 and 136); both
    are reproducible, and the coarse one, with the finer one as its sub-modules, is
    the map (the tasks of a multitask network above the modules inside each task).
    Units the coarse level leaves out are units its members place differently, not
    units of another coarse module, so the containment is measured on the units it
    places (there every unit of the four modules lay in its pair, but one module of
    45 units had 26 placed)."""
    top, sub = coarse.reproducible_labels(), fine.reproducible_labels()
    if int(top.max(initial=-1)) < 1 or not (sub >= 0).any():
        return False
    holder = nest(top, sub)
    for m, parent in enumerate(holder):
        placed = top[sub == m]
        placed = placed[placed >= 0]
        if (
            parent < 0
            or placed.size < NESTED_PLACED * (sub == m).sum()
            or (placed == parent).sum() < NESTED * placed.size
        ):
            return False
    return bool(np.unique(holder).size < holder.size)


def submodule_labels(levels: list[LevelConsensus], chosen: int) -> np.ndarray:
    """``[n_units]`` the reproducible modules of the sub-module scale (-1 none)."""
    finer = finer_level(levels, chosen)
    if finer is None:
        return np.full(levels[chosen].labels.size, -1)
    return levels[finer].reproducible_labels()


def levels_summary(
    levels: list[LevelConsensus], chosen: int, top: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """``atlas.json``'s list of the scales: each one's consensus, which is reported
    (``chosen``) and which gives the sub-modules (``submodules``, with the module of
    ``top`` (default: the chosen scale's reproducible modules) holding each sub-module:
    ``parent_module``)."""
    finer = finer_level(levels, chosen)
    if top is None:
        top = levels[chosen].reproducible_labels()
    out = []
    for i, lv in enumerate(levels):
        d = lv.as_dict() | {"chosen": i == chosen, "submodules": i == finer}
        if i == finer:
            d["parent_module"] = nest(top, lv.reproducible_labels()).tolist()
        out.append(d)
    return out


def finer_level(levels: list[LevelConsensus], chosen: int) -> int | None:
    """The scale whose reproducible modules are the chosen scale's sub-modules: the
    first finer one with more reproducible modules (None when there is no finer
    scale; the next one when none has more)."""
    n = [int(lv.reproducible.sum()) for lv in levels]
    finer = [i for i in range(chosen + 1, len(levels)) if n[i] > n[chosen]]
    if finer:
        return finer[0]
    return chosen + 1 if chosen + 1 < len(levels) else None


def nest(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """``[n_child_modules]`` the parent module holding most of each child module's
    units (-1: none), so that a finer scale's modules list under a coarser one's."""
    n_child = int(child.max(initial=-1)) + 1
    out = np.full(n_child, -1)
    for c in range(n_child):
        p = parent[child == c]
        p = p[p >= 0]
        if p.size:
            out[c] = int(np.bincount(p).argmax())
    return out
