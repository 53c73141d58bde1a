"""The plain-correlation view: modules of units from their own correlations, no SAE.

The baseline an SAE atlas has to beat, or else say it adds nothing: the
configured finder on the positive part of the units' raw Pearson correlations
(Leiden/Louvain on a correlation graph, the usual first step of network
analyses of neurons), at every scale, on all rows and on Poisson-bootstrap
resamples of them (:attr:`..graph.firing.UnitsMode.resampled`). Consensus,
reproducibility and the reported scale follow the SAE ensemble
(:mod:`.consensus`), except that a scale tied in units covered with a finer one
is kept only when its partition has at least half the finer one's modularity
on the all-rows graph (:func:`.consensus.choose_level`).

Significance is judged against independent units: the sample correlations of
``n`` independent units are approximately independent ``N(0, 1/n)``, with ``n``
the number of distinct samples (the rows of one text are not independent). As
in :mod:`.significance`, the best modularity the finder reaches and the
cohesion of each module are compared with the best the finder reaches on null
graphs (the positive part of such noise matrices), ``n_null`` draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone

from ..graph.finders import make_levels, modularity
from ..graph.units import unit_correlation_graph
from .consensus import LevelConsensus, choose_level, level_consensus
from .significance import NullTest, null_test, verdict

if TYPE_CHECKING:
    from ..._coordinator import Coordinator
    from ..inputs import AtlasInputs


@dataclass(frozen=True)
class CorrelationView:
    """Modules of units from their correlations, reproducible and tested."""

    levels: list[LevelConsensus]
    chosen: int
    test: NullTest | None
    """The partition and module tests against independent units (None: nulls off)."""
    partition_ok: bool
    module_ok: np.ndarray
    """``[n_modules]`` each reproducible module significant."""
    module_p: np.ndarray
    clean: bool = False
    """Partitioned without the global mode and noise bulk (else the raw correlations)."""

    @property
    def labels(self) -> np.ndarray:
        """``[n_units]`` the reproducible modules at the reported scale (-1 none)."""
        return self.levels[self.chosen].reproducible_labels()

    @property
    def counted(self) -> np.ndarray:
        """``[n_units]`` the modules that are reproducible and significant (-1 none)."""
        labels = self.labels
        keep = np.flatnonzero(self.module_ok)
        new = np.full(int(labels.max(initial=-1)) + 2, -1)
        new[keep] = np.arange(keep.size)
        return new[labels]

    def summary(self) -> dict[str, Any]:
        lv = self.levels[self.chosen]
        return {
            "method": "the finder on the positive part of the units' "
            + (
                "correlations without the global mode and noise bulk"
                if self.clean
                else "raw correlations"
            )
            + ", on all rows and Poisson-bootstrap resamples; consensus and reproducibility "
            "as the SAE ensemble; tested against independent units (correlations ~ N(0, "
            "1/n_samples))",
            "clean": self.clean,
            "scale": lv.scale,
            "agreement": None if not np.isfinite(lv.agreement) else lv.agreement,
            "n_members": int(lv.members.shape[0]),
            "n_reproducible_modules": int(lv.reproducible.sum()),
            "n_significant_modules": int(self.module_ok.sum()),
            "partition_significant": bool(self.partition_ok),
            "test": self.test.as_dict() if self.test is not None else None,
            "module_p": [float(p) for p in self.module_p],
            "levels": [
                lv.as_dict() | {"chosen": i == self.chosen} for i, lv in enumerate(self.levels)
            ],
        }


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
        mode.views[key] = _correlation_view(inp, clean)
    return mode.views[key]


def partition_modularity(graph: sp.spmatrix, labels: np.ndarray) -> float:
    """Modularity of ``labels`` on ``graph``, units in no module each a module of their
    own (so leaving units out neither raises nor lowers it by itself)."""
    alone = labels < 0
    full = labels.copy()
    full[alone] = int(labels.max(initial=-1)) + 1 + np.arange(int(alone.sum()))
    return modularity(graph, full)


def _correlation_view(inp: AtlasInputs, clean: bool) -> CorrelationView:
    cfg, mode = inp.cfg, inp.mode
    n_obs = max(mode.n_samples, 2)
    correlations = (mode.corr, *mode.resampled)
    real = unit_correlation_graph(mode.corr, n_obs, clean)
    finders = make_levels(cfg)

    def member(i: int) -> list[tuple[np.ndarray, float]]:  # [level] (labels, modularity)
        g = real if i == 0 else unit_correlation_graph(correlations[i], n_obs, clean)
        return [(r.labels_, float(r.modularity_)) for r in (f.fit(g) for f in make_levels(cfg, i))]

    # the members (all rows, resamples) are shared among the ranks of a torchrun analysis
    per_member = inp.coord.spread(len(correlations), member)
    levels = [
        level_consensus(
            np.stack([m[i][0] for m in per_member]),
            getattr(finders[i], "resolutions", (None,))[0],
            random_state=cfg.seed,
        )
        for i in range(len(finders))
    ]
    quality = [partition_modularity(real, lv.reproducible_labels()) for lv in levels]
    chosen = choose_level(levels, [q for _, q in per_member[0]], quality)
    labels = levels[chosen].reproducible_labels()
    n_mod = int(labels.max(initial=-1)) + 1
    test = None
    if cfg.nulls and cfg.n_null >= 2:
        seeds = np.random.SeedSequence([cfg.seed, 11]).spawn(cfg.n_null)
        finder = finders[chosen]  # its settings: every fit starts from a clone

        def fit(g: sp.spmatrix) -> tuple[float, np.ndarray]:
            f = clone(finder).fit(g)
            return float(f.modularity_), f.labels_

        def null_graph(i: int, _: Coordinator | None) -> sp.csr_matrix:  # counts no pairs
            rng = np.random.default_rng(seeds[i])
            z = np.triu(rng.standard_normal(mode.corr.shape) / np.sqrt(n_obs), 1)
            return unit_correlation_graph(z + z.T + np.eye(len(z)), n_obs, clean)

        test = null_test(
            "independent units", real, labels, fit, null_graph, cfg.n_null, coord=inp.coord
        )
    partition_ok, module_ok, module_p = verdict([test] if test else [], cfg.alpha)
    if test is None:
        module_ok, module_p = np.zeros(n_mod, bool), np.full(n_mod, np.nan)
    return CorrelationView(levels, chosen, test, partition_ok, module_ok, module_p, clean)
