"""The correlation view's null model: its units made independent by circular shifts.

Each null draw shifts every unit's column of a block of the store's first rows
(:func:`null_block`) along the rows by its own random offset (the circular-shift
surrogate of spike-train analysis): each unit keeps its values, their heavy tails
and their runs along the rows, and only the alignment between units is broken.
:class:`NullGraphs` builds the view's graphs of the block and of its draws, once
for the raw and the cleaned view together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ..graph.units import unit_correlation_graph

if TYPE_CHECKING:
    from ..inputs import AtlasInputs


class NullGraphs:
    """The graphs of the null test, shared by the raw and the cleaned view: both are
    built from one correlation of the same block (or of the same shifted block in draw
    ``i``), whose product costs as much as the cleaning's decomposition at thousands of
    units. With neighbour graphs (``neighbours``, small) the other view's graph is built
    beside each one asked for and kept until that view asks; graphs of every pair are
    as large as the correlations and are built where asked."""

    def __init__(self, inp: AtlasInputs, neighbours: int | None) -> None:
        cfg, mode = inp.cfg, inp.mode
        self.block = null_block(inp)
        # the block holds its share of the samples (for the noise edge of `clean`)
        share = len(self.block) / max(inp.main.codes.n_rows, 1)
        self.n_block = max(2, round(max(mode.n_samples, 2) * share))
        self.seeds = np.random.SeedSequence([cfg.seed, 11]).spawn(cfg.n_null)
        self.neighbours, self.device = neighbours, cfg.device
        self.kept: dict[tuple[bool, int | None], sp.csr_matrix] = {}

    def graph(self, clean: bool, draw: int | None) -> sp.csr_matrix:
        """The view's (``clean``) graph of the block (``draw`` None) or of null draw
        ``draw`` (every unit's column shifted circularly by its own random offset)."""
        kept = self.kept.pop((clean, draw), None)
        if kept is not None:
            return kept
        z = self.block
        if draw is not None:
            z = circular_shift(z, np.random.default_rng(self.seeds[draw]))
        corr = block_correlation(z)
        k, n = self.neighbours, self.n_block
        if k is not None:
            self.kept[(not clean, draw)] = unit_correlation_graph(
                corr, n, not clean, k, self.device
            )
        return unit_correlation_graph(corr, n, clean, k, self.device)


def null_graphs(inp: AtlasInputs, neighbours: int | None) -> NullGraphs:
    """The null graphs of ``inp``'s rows and settings, one set for both views."""
    cfg = inp.cfg
    key = ("null graphs", cfg.seed, cfg.n_null, cfg.null_rows, cfg.device, neighbours)
    if key not in inp.mode.views:
        inp.mode.views[key] = NullGraphs(inp, neighbours)
    return inp.mode.views[key]


#: Bytes of the block of unit rows (float32) the correlation view's null shifts.
NULL_BLOCK_BYTES = 256 << 20


def null_block(inp: AtlasInputs) -> np.ndarray:
    """``[m, n_units]`` the analysed units on the store's first ``m`` rows, standardised
    per unit (a unit that never varies: zeros), float32: ``m`` at most ``null_rows``
    and :data:`NULL_BLOCK_BYTES`; rows with a NaN/Inf left out."""
    names = [l.name for l in inp.main.codes.layers]
    n_units = sum(l.n_units for l in inp.main.codes.layers)
    m = min(inp.cfg.null_rows, inp.store.n_rows, max(16, NULL_BLOCK_BYTES // (4 * n_units)))
    x = inp.store.read(0, m, layers=names).numpy().astype(np.float32, copy=False)
    x = x[np.isfinite(x).all(axis=1)]
    # each unit brought to at most 1 first: in float32 the squares of units of 1e30
    # overflow and those of 1e-30 underflow, which made the whole block zeros (the test
    # then compared a modularity of 0 with nulls of 0: no module significant)
    peak = np.abs(x).max(axis=0, initial=0.0)
    x = x / np.where(peak > 0, peak, 1.0).astype(np.float32)
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = x.std(axis=0)
    return np.asfortranarray(x / np.where(std > 0, std, np.inf))


def block_correlation(z: np.ndarray) -> np.ndarray:
    """``[n_units, n_units]`` Pearson correlation of the standardised block ``z``
    (diagonal 1, a unit that never varies uncorrelated)."""
    corr = (z.T @ z).astype(np.float64) / max(len(z), 1)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def circular_shift(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``z`` with every column rolled along the rows by its own offset, drawn uniformly."""
    m = len(z)
    out = np.empty_like(z, order="F")
    for j, k in enumerate(rng.integers(0, max(m, 1), z.shape[1])):
        out[:k, j] = z[m - k :, j]
        out[k:, j] = z[: m - k, j]
    return out
