"""The plain-correlation view's result (:mod:`.correlation`): its scales, the one
reported, its tests and the modules that count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .consensus import LevelConsensus, levels_summary, submodule_labels
from .shared_mode import OWN_SHARE
from .significance import NullTest


def keep_modules(labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``labels`` (0..n-1, -1 none) with the modules not ``kept`` set to -1 and the rest
    numbered 0.. in order."""
    new = np.full(kept.size + 1, -1)
    new[np.flatnonzero(kept)] = np.arange(int(kept.sum()))
    return new[labels]


@dataclass(frozen=True)
class CorrelationView:
    """Modules of units from their correlations, reproducible and tested."""

    levels: list[LevelConsensus]
    chosen: int
    tests: tuple[NullTest, ...]
    """The tests against each null model (:data:`.correlation.NULLS`; empty: nulls off): the
    partition and each module beat every one (:attr:`module_tests`)."""
    partition_ok: bool
    module_ok: np.ndarray
    """``[n_modules]`` each reproducible module significant."""
    module_p: np.ndarray
    clean: bool = False
    """Partitioned without the global mode and noise bulk (else the raw correlations)."""
    opposed: tuple[float, ...] = ()
    """Per scale, how strongly its most anti-correlated pair of modules opposes each other
    (:func:`.partition_fit.opposition`)."""
    own: np.ndarray | None = None
    """``[n_reproducible]`` each reproducible module's share of its correlation that is
    its own, not the mode all units share (:func:`.shared_mode.own_share`; None: all)."""

    @property
    def kept(self) -> np.ndarray:
        """``[n_reproducible]`` the reproducible modules that are modules: their co-firing
        is their own (:data:`.shared_mode.OWN_SHARE`)."""
        n = int(self.levels[self.chosen].reproducible.sum())
        return np.ones(n, bool) if self.own is None else self.own >= OWN_SHARE

    @property
    def labels(self) -> np.ndarray:
        """``[n_units]`` the reproducible modules at the reported scale whose co-firing is
        their own (:attr:`kept`; -1 none)."""
        return keep_modules(self.levels[self.chosen].reproducible_labels(), self.kept)

    def reproducibility(self) -> np.ndarray:
        """``[n_modules]`` the reproducibility of each module of :attr:`labels`."""
        lv = self.levels[self.chosen]
        return lv.reproducibility[lv.reproducible_modules()][self.kept]

    @property
    def counted(self) -> np.ndarray:
        """``[n_units]`` the modules that are reproducible and significant (-1 none)."""
        labels = self.labels
        keep = np.flatnonzero(self.module_ok)
        new = np.full(int(labels.max(initial=-1)) + 2, -1)
        new[keep] = np.arange(keep.size)
        return new[labels]

    @property
    def test(self) -> NullTest | None:
        """The test against independent units (None: nulls off)."""
        return self.tests[0] if self.tests else None

    @property
    def module_tests(self) -> list[NullTest]:
        """The tests each module is judged by: both nulls, each with its own figure."""
        return list(self.tests)

    def summary(self) -> dict[str, Any]:
        lv = self.levels[self.chosen]
        return {
            "method": "the finder on "
            + (
                "the positive part of the units' correlations without the global mode and "
                "noise bulk"
                if self.clean
                else "the units' squared raw correlations (unsigned: units that rise as "
                "others fall depend on each other too)"
            )
            + ", on all rows and Poisson-bootstrap resamples; consensus and "
            "reproducibility as the SAE ensemble; tested on evenly spaced blocks of the "
            "analysed rows against the same rows with each unit circularly shifted by its own random offset "
            "(independent units) and against their correlations with the eigenvectors "
            "drawn at random (no groups)",
            "clean": self.clean,
            "scale": lv.scale,
            "agreement": None if not np.isfinite(lv.agreement) else lv.agreement,
            "n_members": int(lv.members.shape[0]),
            "n_reproducible_modules": int(lv.reproducible.sum()),
            "own_share": None if self.own is None else [float(x) for x in self.own],
            "n_shared_mode_groups": int((~self.kept).sum()),
            "n_significant_modules": int(self.module_ok.sum()),
            "partition_significant": bool(self.partition_ok),
            "test": self.test.as_dict() if self.test is not None else None,
            "tests": [t.as_dict() for t in self.tests],
            "module_p": [float(p) for p in self.module_p],
            "levels": [
                d | ({"opposition": float(self.opposed[i])} if self.opposed else {})
                for i, d in enumerate(levels_summary(self.levels, self.chosen, self.labels))
            ],
        }

    def submodules(self) -> np.ndarray:
        """``[n_units]`` the reproducible modules of the sub-module scale (-1 none)."""
        return submodule_labels(self.levels, self.chosen)
