"""What the co-occurrence graph counts: an SAE's strong firings on the atlas's rows,
with the features that are no module's (dense, or carrying the units' global mode)
set aside.

The units' correlation and global mode (:func:`units_mode`) come from the rows
alone, so every SAE analysed on the same rows (the analysed one, its seed twins,
the random-SAE control) is judged against the same mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ...sae import SparseAutoencoder
from .codes import Codes, strong_firing
from .moments import std_from_moments
from .units import excluded_features, global_mode, unit_correlation

if TYPE_CHECKING:
    from ..config import AtlasConfig


@dataclass(frozen=True)
class UnitsMode:
    """The units' correlation on the atlas's rows and their global mode, if any."""

    corr: np.ndarray | None
    """``[n_units, n_units]`` correlation, or None when the codes carry no unit gram."""
    mode: np.ndarray | None
    """``[n_units]`` the global mode (:func:`.units.global_mode`), or None."""
    var: float
    """The mode's variance (its eigenvalue); 0 without a mode."""
    resampled: tuple[np.ndarray, ...] = ()
    """The correlation on bootstrap resamples of the rows (``Codes.resampled_grams``)."""
    n_samples: int = 0
    """Distinct samples (inputs) among the rows: the rows of one text are not
    independent, so this bounds the effective number of observations."""
    first_members: int = 0
    """Members (all rows and the first resamples) the correlation view starts from; it
    takes more of ``resampled`` while its consensus is undecided (0: all of them)."""
    views: dict = field(default_factory=dict, compare=False, repr=False)
    """What is computed from these units' correlations alone, once for every SAE
    analysed on the same rows (the correlation view)."""

    @property
    def view_start(self) -> int:
        """Members the correlation view starts from: :attr:`first_members` of all rows
        and its resamples (all of them when 0)."""
        return min(self.first_members or 1 + len(self.resampled), 1 + len(self.resampled))


#: Members the units' correlation view may grow to (all rows and resamples): a consensus
#: of 6 members puts a unit between two modules in one or the other by chance (its
#: co-assignment is known to about +-0.2). Each resample costs a gram of the units on
#: every row, summed in the encoding pass, and its fits grow with the units squared: the
#: view grows only up to :data:`MORE_MEMBERS_UNITS` units, and as far as the grams of the
#: added resamples stay within :data:`MORE_MEMBERS_MACS` multiply-adds (about a second
#: of one core; the digits demo's 1,797 rows x 144 units take 0.2% of it per resample,
#: 1M rows x 384 units more than all of it).
VIEW_MEMBERS = 24
MORE_MEMBERS_UNITS = 512
MORE_MEMBERS_MACS = 1 << 34


def view_members(n_members: int, n_units: int, n_rows: int) -> int:
    """How many members the units' correlation view may use: the SAE ensemble's
    ``n_members``, and more, up to :data:`VIEW_MEMBERS`, where their grams are cheap."""
    if n_units > MORE_MEMBERS_UNITS:
        return n_members
    affordable = MORE_MEMBERS_MACS // max(n_rows * n_units * n_units, 1)
    return max(n_members, min(VIEW_MEMBERS, n_members + affordable))


def units_mode(codes: Codes, first_members: int = 0) -> UnitsMode:
    """The units' correlation and global mode from ``codes``' unit moments
    (``first_members``: :attr:`UnitsMode.first_members`)."""
    if codes.unit_gram is None:
        return UnitsMode(None, None, 0.0)
    corr = unit_correlation(codes.unit_gram, codes.unit_mean, codes.unit_std, codes.n_rows)
    mode = global_mode(corr)
    resampled = []
    for w, s, gram in codes.resampled_grams:
        mean = s / max(w, 1e-300)
        std = std_from_moments(np.diag(gram) / max(w, 1e-300), mean)
        resampled.append(unit_correlation(gram, mean, std, w))
    return UnitsMode(
        corr,
        mode,
        float(mode @ corr @ mode) if mode is not None else 0.0,
        tuple(resampled),
        int(np.unique(codes.samples).size),
        first_members,
    )


@dataclass(frozen=True)
class Firing:
    """An SAE's codes on the atlas's rows and the firings its graph counts."""

    sae: SparseAutoencoder
    codes: Codes
    fires: sp.csr_matrix
    """``[n_rows, d_sae]`` strong firings (:func:`.codes.strong_firing`) with the
    excluded features' columns emptied."""
    dense: np.ndarray
    """``[d_sae]`` bool: firing on more than ``max_density`` of the rows."""
    global_feats: np.ndarray
    """``[d_sae]`` bool: carrying the units' global mode."""
    n_strong: np.ndarray
    """``[d_sae]`` rows on which each feature fires strongly, the excluded features
    too (``fires`` has their columns emptied: a dense feature's firing density read
    from it was 0)."""

    @property
    def excluded(self) -> np.ndarray:
        """``[d_sae]`` bool: the features kept out of modules."""
        return self.dense | self.global_feats


def firing(sae: SparseAutoencoder, codes: Codes, mode: UnitsMode, cfg: AtlasConfig) -> Firing:
    """The strong firings of ``sae``'s ``codes``, dense and global-mode features set aside."""
    fires = strong_firing(codes.matrix, cfg.min_activation)
    dense, global_feats = excluded_features(
        sae, codes, fires, mode.mode, mode.var, cfg.max_density, cfg.global_mode_cosine
    )
    n_strong = np.bincount(fires.indices, minlength=fires.shape[1])
    kept = drop_columns(fires, dense | global_feats)
    return Firing(sae, codes, kept, dense, global_feats, n_strong)


def drop_columns(matrix: sp.csr_matrix, drop: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with the entries of the flagged columns removed."""
    if not drop.any():
        return matrix
    keep = ~drop[matrix.indices]
    out = sp.csr_matrix((matrix.data * keep, matrix.indices, matrix.indptr), shape=matrix.shape)
    out.eliminate_zeros()
    return out
