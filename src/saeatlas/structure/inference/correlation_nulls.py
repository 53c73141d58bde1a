"""The correlation view's null models: independent units, and units without groups.

Two nulls, each drawn ``n_null`` times from a block of the analysed rows, taken as the
SAE's null models take theirs (:func:`null_block`); the view's partition counts only when it beats both, and each of
its modules too:

- **independent units** (:func:`circular_shift`): every unit's column is shifted
  along the rows by its own random offset (the circular-shift surrogate of
  spike-train analysis). Each unit keeps its values, their heavy tails and their
  runs along the rows; only the alignment between units is broken. It rejects
  "the units do not co-fire", which any correlated data rejects.
- **no groups** (:func:`rotated_correlation`): the block's correlation matrix with
  its eigenvalues kept and its eigenvectors drawn at random (the global mode's
  direction kept where the units have one). The units then have as many factors,
  as strong, but their loadings spread as a Gaussian cloud with no groups in it:
  the null of SigClust (Liu, Hayes, Nobel & Marron 2008, "Statistical significance
  of clustering for high-dimension, low-sample size data"), one Gaussian with the
  data's eigenvalues. Without it, units driven by a few dense factors (three
  Gaussian factors of random loadings, 144 units) were cut into 6 "reproducible
  modules": the cut is reproducible because the same correlations give the same
  cut, but any cloud of loadings is cut so. Partitions into groups (planted blocks,
  the task modules of a network trained on three tasks) beat it at z 8-55; those
  cuts reach the null's modularity (z -0.5 to 1.3). Each module is judged by the
  share of its edge weight it keeps inside, beside the null's groups of its size
  (:mod:`.correlation`).

:class:`NullGraphs` builds the view's graphs of the block and of its draws, once for
the raw and the cleaned view together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from ..graph.units import global_mode, unit_correlation_graph

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
        self.rotation_seeds = np.random.SeedSequence([cfg.seed, 12]).spawn(cfg.n_null)
        self.neighbours, self.device = neighbours, cfg.device
        self.kept: dict[tuple[bool, int | None, bool], sp.csr_matrix] = {}
        self._spectrum: tuple[np.ndarray, np.ndarray | None] | None = None

    def graph(self, clean: bool, draw: int | None, rotate: bool = False) -> sp.csr_matrix:
        """The view's (``clean``) graph of the block (``draw`` None) or of null draw
        ``draw``: every unit's column shifted circularly by its own random offset, or
        with ``rotate`` the block's correlations with their eigenvectors drawn at
        random (:func:`rotated_correlation`)."""
        rotate = rotate and draw is not None
        kept = self.kept.pop((clean, draw, rotate), None)
        if kept is not None:
            return kept
        if rotate:
            vals, mode = self.spectrum()
            rng = np.random.default_rng(self.rotation_seeds[draw])
            corr = rotated_correlation(vals, mode, rng, self.device)
        else:
            z = self.block
            if draw is not None:
                z = circular_shift(z, np.random.default_rng(self.seeds[draw]))
            corr = block_correlation(z)
        k, n = self.neighbours, self.n_block
        if k is not None:
            self.kept[(not clean, draw, rotate)] = unit_correlation_graph(
                corr, n, not clean, k, self.device, unsigned=clean
            )
        return unit_correlation_graph(corr, n, clean, k, self.device, unsigned=not clean)

    def spectrum(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The eigenvalues of the block's correlations (ascending) and its global mode
        (:func:`..graph.units.global_mode`; None: none), computed once."""
        if self._spectrum is None:
            corr = block_correlation(self.block)
            self._spectrum = (np.linalg.eigvalsh(corr), global_mode(corr))
        return self._spectrum


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
    """``[m, n_units]`` the analysed units on ``m`` of the analysed rows (evenly spaced
    blocks of them, :func:`.significance.subsample_rows`, as the SAE's null models
    compare), standardised per unit (a unit that never varies: zeros), float32: ``m`` at
    most ``null_rows`` and :data:`NULL_BLOCK_BYTES`; rows with a NaN/Inf left out.

    The store's first rows were read instead: of a store whose rows come class by class
    the test saw the first classes alone (z 2.7 where the same rows shuffled gave 42.9,
    and no significant group where there were two), and with --max-rows it read rows the
    atlas never analysed."""
    from .significance import subsample_rows

    codes = inp.main.codes
    names = [l.name for l in codes.layers]
    n_units = sum(l.n_units for l in codes.layers)
    m = min(inp.cfg.null_rows, codes.n_rows, max(16, NULL_BLOCK_BYTES // (4 * n_units)))
    rows = codes.rows[subsample_rows(codes.n_rows, m)]
    runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1) if rows.size else []
    x = np.concatenate(
        [np.zeros((0, n_units), np.float32)]
        + [
            inp.store.read(int(r[0]), int(r[-1]) + 1, layers=names).numpy().astype(np.float32)
            for r in runs
        ]
    )
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


@torch.no_grad()
def rotated_correlation(
    vals: np.ndarray,
    mode: np.ndarray | None,
    rng: np.random.Generator,
    device: str | None = None,
) -> np.ndarray:
    """``[n, n]`` a correlation matrix with the eigenvalues ``vals`` (ascending) and
    eigenvectors drawn uniformly at random (Haar: the QR of a Gaussian matrix, signs
    fixed by ``R``'s diagonal, Mezzadri 2007), rescaled to a unit diagonal. With a
    global ``mode`` (unit vector) the largest eigenvalue keeps the mode's direction and
    the others are drawn orthogonal to it: the units still all move together, and only
    the structure beyond the mode loses its groups. ``device``: where to multiply."""
    n = vals.size
    dev = torch.device(device or "cpu")
    g = torch.from_numpy(rng.standard_normal((n, n))).to(dev, torch.float64)
    lam = torch.from_numpy(np.asarray(vals, dtype=np.float64)).to(dev)
    if mode is not None:
        m = torch.from_numpy(np.asarray(mode, dtype=np.float64)).to(dev)
        g = g[:, : n - 1] - torch.outer(m, m @ g[:, : n - 1])
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))
    if mode is not None:  # the other eigenvalues on random directions, the largest on the mode
        q = torch.cat([q, m[:, None]], dim=1)
    c = (q * lam.clamp_min(0)) @ q.T
    d = c.diagonal().clamp_min(1e-300).sqrt()
    c = (c / d[:, None] / d[None, :]).clamp(-1.0, 1.0).cpu().numpy()
    np.fill_diagonal(c, 1.0)
    return c
