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
(Paulo & Belrose 2025), so members are compared as modules of units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._progress import progress_bar
from ..graph.communities import Modules, find_levels
from .consensus import LevelConsensus, choose_level, level_consensus, nest
from .stability import bootstrap_rows

if TYPE_CHECKING:
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

    @property
    def level(self) -> LevelConsensus:
        return self.levels[self.chosen]

    @property
    def main_modules(self) -> Modules:
        """The analysed SAE's modules at the reported scale."""
        return self.main[self.chosen]

    def submodules(self) -> np.ndarray:
        """``[n_units]`` the reproducible modules of the next finer scale (-1 none)."""
        if self.chosen + 1 >= len(self.levels):
            return np.full(self.level.labels.size, -1)
        return self.levels[self.chosen + 1].reproducible_labels()

    def summary(self) -> dict[str, Any]:
        levels = []
        parent = self.level.reproducible_labels()
        for i, lv in enumerate(self.levels):
            d = lv.as_dict()
            d["chosen"] = i == self.chosen
            if i == self.chosen + 1:
                d["parent_module"] = nest(parent, lv.reproducible_labels()).tolist()
            levels.append(d)
        return {
            "n_saes": self.n_saes,
            "n_bootstrap": self.n_bootstrap,
            "n_members": int(self.level.members.shape[0]),
            "scale": self.level.scale,
            "agreement": None if not np.isfinite(self.level.agreement) else self.level.agreement,
            "levels": levels,
            "method": "unit modules of every member (SAE seeds x row bootstraps) at every "
            "resolution; consensus of the co-assignment (Lancichinetti & Fortunato 2012); "
            "reproducibility = fraction of members recovering a module at Jaccard >= 0.5 "
            "(Hennig 2007); resolution whose reproducible modules hold the most units, ties "
            "to the coarser (stability-based selection, Lange et al. 2004)",
        }


def build_ensemble(inp: AtlasInputs) -> Ensemble:
    """The ensemble of ``inp``: its SAE and seed SAEs, on all rows and bootstraps.

    Member ``m`` is SAE ``m // (1 + n_bootstrap)`` on resample ``m % (1 + n_bootstrap)``
    (0: all rows). The members are shared among the ranks of a ``torchrun`` analysis
    (``inp.coord``) and give the ensemble one process gives: every rank draws every
    resample's rows from the one seeded stream, in member order, as one process
    does (row indices: cheap), and computes its own members' communities (the
    expensive part) from them. Every rank computes member 0 itself (the analysed
    SAE on all rows: its graph, finders and attribution, which every later step
    reads, are larger than what it takes to compute them)."""
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

    def member(m: int) -> list[Modules]:
        f = firings[m // n_boot]
        return find_levels(f, cfg, *resamples[m]) if m in resamples else find_levels(f, cfg)

    def unit_modules(m: int) -> list[np.ndarray]:  # [level] unit modules
        return [x.units.module.astype(np.int64) for x in member(m)]

    main = find_levels(inp.main, cfg, coord=inp.coord)  # member 0, its pairs counted in parts
    with progress_bar("ensemble (SAEs x resamples)", runs, inp.progress) as bar:
        bar.advance()
        rest = inp.coord.spread(runs - 1, lambda i: unit_modules(i + 1), on_item=bar.advance)
    per_member = [[x.units.module.astype(np.int64) for x in main], *rest]
    levels = [
        level_consensus(
            np.stack([m[i] for m in per_member]),
            getattr(main[i].finder, "resolutions", (None,))[0],
            random_state=cfg.seed,
        )
        for i in range(len(main))
    ]
    chosen = choose_level(levels, [float(m.finder.modularity_) for m in main])
    return Ensemble(levels, chosen, main, 1 + len(inp.seed_saes), cfg.n_bootstrap)


def feature_modules(main: Modules, unit_modules: np.ndarray) -> np.ndarray:
    """``[d_sae]`` the analysed SAE's feature communities relabelled to the unit modules
    they project onto: a community joins the module its units match at Jaccard >= 0.5
    (the best match); communities matching none stay out (-1)."""
    comm_units = main.units.module
    out = np.full(main.feature_module.shape, -1)
    n_mod = int(unit_modules.max(initial=-1)) + 1
    for c in range(main.n_modules):
        mine = comm_units == c
        if not mine.any() or n_mod == 0:
            continue
        inter = np.bincount(unit_modules[mine & (unit_modules >= 0)], minlength=n_mod)
        size = np.bincount(unit_modules[unit_modules >= 0], minlength=n_mod)
        j = inter / (mine.sum() + size - inter)
        best = int(np.argmax(j))
        if j[best] >= 0.5:
            out[main.feature_module == c] = best
    return out
