"""The SAE ensemble: unit modules from several SAEs and row resamples, not from one run.

One SAE's modules of units are one draw: another seed's dictionary, or the same
dictionary on resampled rows, divides the units differently. The atlas's
members are the analysed SAE and the SAEs trained like it with other seeds
(``inp.seed_saes``, each encoded once on the same rows), each on all rows and on
``cfg.n_bootstrap`` bootstrap resamples of them (:func:`.stability.bootstrap_rows`;
whole blocks of rows when co-occurrence is counted in token windows). Every
member gives its unit modules at every scale of the finder
(:func:`..graph.communities.find_levels`, one co-occurrence graph per member);
:mod:`.consensus` turns them into consensus modules, their reproducibility, and
the scale to report. Units are the same in every member, features are not
(Paulo & Belrose 2025), so members are compared as modules of units. At the
reported scale each unit then joins the reproducible module whose energy its own
energy follows, pooled over the ensemble's SAEs (:mod:`.coupling`): the members
agree on a module's core and disagree on its edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._progress import progress_bar
from ..graph.communities import Modules, counts_in_parts, find_levels, graph_items
from ..graph.finders import make_levels, relabel
from .cohesion import community_sizes, community_weights, reappearing_cohesion
from .consensus import (
    REPRODUCIBLE,
    LevelConsensus,
    choose_level,
    level_consensus,
    levels_summary,
    membership,
    recovered_fraction,
    submodule_labels,
)
from .coupling import assign_units, energy_coupling, feature_modules, module_energy
from .stability import bootstrap_rows

if TYPE_CHECKING:
    from ..._coordinator import Coordinator
    from ..inputs import AtlasInputs


@dataclass(frozen=True)
class Ensemble:
    """The members' unit modules and their consensus at every scale."""

    levels: list[LevelConsensus]
    """One consensus per scale, coarsest first."""
    chosen: int
    """Index of the scale reported."""
    main: list[Modules]
    """The analysed SAE on all rows, at every scale (its feature communities)."""
    n_saes: int
    n_bootstrap: int
    unit_module: np.ndarray
    """``[n_units]`` each unit's module at the reported scale (-1 none): the reproducible
    consensus modules, their units assigned by energy coupling (:mod:`.coupling`)."""
    membership: np.ndarray
    """``[n_units]`` a unit's mean co-assignment, over the members, with the other units
    of its module (0 in none)."""
    coupling: np.ndarray
    """``[n_units]`` the correlation of a unit's energy with its module's (0 in none)."""
    reproducibility: np.ndarray
    """``[n_modules]`` fraction of members recovering each module (Jaccard >= 0.5)."""
    member_modularity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """``[n_members]`` the best modularity each member's finder reaches over the scales
    (the statistic the nulls test): its spread is its sampling error (rows and seeds)."""
    member_cohesion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """``[n_members, n_modules]`` each module's cohesion as each member finds it (NaN:
    it does not reappear there; :mod:`.cohesion`)."""

    @property
    def level(self) -> LevelConsensus:
        return self.levels[self.chosen]

    @property
    def main_modules(self) -> Modules:
        """The analysed SAE's modules at the reported scale."""
        return self.main[self.chosen]

    def submodules(self) -> np.ndarray:
        """``[n_units]`` the reproducible modules of the sub-module scale (-1 none)."""
        return submodule_labels(self.levels, self.chosen)

    def summary(self) -> dict[str, Any]:
        # sub-modules under the modules as the coupling placed their units
        levels = levels_summary(self.levels, self.chosen, top=self.unit_module)
        return {
            "n_saes": self.n_saes,
            "n_bootstrap": self.n_bootstrap,
            "n_members": int(self.level.members.shape[0]),
            "scale": self.level.scale,
            "agreement": None if not np.isfinite(self.level.agreement) else self.level.agreement,
            "levels": levels,
            "units_in_modules": int((self.unit_module >= 0).sum()),
            "method": "unit modules of every member (SAE seeds x row bootstraps) at every "
            "resolution; consensus of the co-assignment (Lancichinetti & Fortunato 2012); "
            "reproducibility = fraction of members recovering a module at Jaccard >= 0.5 "
            "(Hennig 2007); resolution whose reproducible modules hold the most units, ties "
            "to the coarser (stability-based selection, Lange et al. 2004); each unit in "
            "the reproducible module whose energy, pooled over the SAEs, its energy follows "
            "(nearest-mean boundary between the module's consensus units and the rest)",
        }


def build_ensemble(inp: AtlasInputs) -> Ensemble:
    """The ensemble of ``inp``: its SAE and seed SAEs, on all rows and bootstraps.

    Member ``m`` is SAE ``m // (1 + n_bootstrap)`` on resample ``m % (1 + n_bootstrap)``
    (0: all rows). Under ``torchrun`` (``inp.coord``) the ranks give the ensemble one
    process gives: every rank draws every resample's rows from the one seeded stream,
    in member order, as one process does (row indices: cheap). Every rank computes
    member 0 (the analysed SAE on all rows: its graph, finders and attribution, which
    every later step reads, are larger than what it takes to compute them), its pairs
    counted in parts by all ranks together. The other members go through
    :func:`..graph.communities.graph_items`: with at least ``cfg.count_in_parts_from``
    latents every rank computes every member, each member's pairs counted in parts
    by all ranks together; with fewer the members are shared out, each rank counting
    its own members' graphs whole."""
    cfg = inp.cfg
    n_boot = 1 + cfg.n_bootstrap
    # every SAE's codes first: encoding is shared by the ranks, so it cannot be an item
    firings = [inp.main, *(inp.firing_of(s) for s in inp.seed_saes)]
    runs = n_boot * len(firings)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7]))
    resamples = {
        m: bootstrap_rows(firings[m // n_boot].codes.samples, cfg.window, rng)
        for m in range(runs)
        if m % n_boot
    }

    def member(m: int, coord: Coordinator | None) -> list[Modules]:
        f, finders = firings[m // n_boot], make_levels(cfg, m)
        rows = resamples.get(m, (None, None))
        return find_levels(f, cfg, *rows, finders=finders, coord=coord)

    def communities(ms: list[Modules]) -> list[tuple]:
        # [level] (unit modules, feature communities, the finder's modularity, the
        # weights between communities and their sizes: :mod:`.cohesion`)
        return [
            (
                x.units.module.astype(np.int64),
                x.feature_module.astype(np.int64),
                float(x.finder.modularity_),
                community_weights(x.graph.adjacency, x.feature_module),
                community_sizes(x.feature_module),
            )
            for x in ms
        ]

    main = member(0, inp.coord)  # every rank, its pairs counted in parts
    with progress_bar("ensemble (SAEs x resamples)", runs, inp.progress) as bar:
        bar.advance()
        rest = graph_items(
            runs - 1,
            lambda i, coord: communities(member(i + 1, coord)),
            inp.coord,
            counts_in_parts(cfg, max(f.codes.d_sae for f in firings), inp.coord),
            on_item=bar.advance,
        )
    per_member = [communities(main), *rest]
    levels = [
        level_consensus(
            np.stack([m[i][0] for m in per_member]),
            getattr(main[i].finder, "resolutions", (None,))[0],
            random_state=cfg.seed,
        )
        for i in range(len(main))
    ]
    chosen = choose_level(levels, [float(m.finder.modularity_) for m in main])
    # each SAE's communities on all rows (member j * n_boot) at the reported scale
    dictionaries = [per_member[m][chosen][:2] for m in range(0, runs, n_boot)]
    units = _assign(inp, levels[chosen], [f.codes.matrix for f in firings], dictionaries)
    q = np.array([max(lv[2] for lv in m) for m in per_member])
    cohesion = np.array(
        [
            reappearing_cohesion(m[chosen][3], m[chosen][4], m[chosen][0], units[0])
            for m in per_member
        ]
    ).reshape(len(per_member), -1)
    return Ensemble(levels, chosen, main, len(firings), cfg.n_bootstrap, *units, q, cohesion)


def _assign(
    inp: AtlasInputs,
    level: LevelConsensus,
    codes: list,
    dictionaries: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, ...]:
    """``(unit_module, membership, coupling, reproducibility)`` at the reported scale: the
    reproducible consensus modules with every unit assigned by energy coupling
    (:mod:`.coupling`); a module that then holds fewer than two units, or that fewer
    than :data:`.consensus.REPRODUCIBLE` of the members recover, is dropped."""
    consensus = level.reproducible_labels()
    n_units = consensus.size
    n_modules = int(consensus.max(initial=-1)) + 1
    if n_modules == 0:
        zeros = np.zeros(n_units)
        return np.full(n_units, -1), zeros, zeros, np.zeros(0)
    cfg = inp.cfg
    energy = module_energy(
        codes, [feature_modules(u, f, consensus) for u, f in dictionaries], n_modules
    )
    coupling = energy_coupling(
        inp.store,
        inp.main.codes,
        energy,
        batch_size=cfg.batch_size,
        max_rows=cfg.max_rows,
        device=cfg.device,
        coord=inp.coord,
        mode=inp.mode.mode,
    )
    raw = assign_units(coupling, consensus)
    own = np.where(raw >= 0, coupling[np.arange(n_units), raw.clip(0)], 0.0)
    labels = relabel(raw, 2)
    n_final = int(labels.max(initial=-1)) + 1
    reproducibility = recovered_fraction(labels, level.members)
    if (reproducibility < REPRODUCIBLE - 1e-12).any():
        keep = np.flatnonzero(reproducibility >= REPRODUCIBLE - 1e-12)
        new = np.full(n_final + 1, -1)
        new[keep] = np.arange(keep.size)
        labels, reproducibility = new[labels], reproducibility[keep]
    own = np.where(labels >= 0, own, 0.0)
    return labels, membership(labels, level.members), own, reproducibility
