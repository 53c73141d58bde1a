"""Null models: data or graphs with the same marginals and no modular structure.

- :func:`permute_codes`: every feature's firing moved to random rows (same
  density, same activation values), independently per feature.
- :func:`rewire`: configuration-model rewiring of a weighted graph (Maslov &
  Sneppen 2002 keep degrees by edge swaps; here the edge stubs are shuffled at
  once and every edge keeps its weight, so each node keeps its number of edge
  ends; self-loops are dropped and parallel edges merged).
- :func:`dictionary_null_codes`: the null that carries the SAE's own artefacts.
  SAE latents co-fire even when the true features are independent (a feature
  split over several latents, absorbed into others, or mixed into latents
  that each cover parts of several features), so shuffling codes alone is too
  weak. Here rows are synthesised from a *source* dictionary with every source
  feature firing independently (its real activations, permuted across rows),
  plus Gaussian noise with the source's real reconstruction error per unit,
  and then encoded by the analysed SAE: whatever co-firing its encoder adds to
  independent features appears in the null too. The source is best another
  SAE trained the same way with another seed: its features are a different
  cut of the same data, which the analysed SAE splits and mixes as it does the
  true features. With the analysed SAE as its own source the null is weaker:
  an SAE recognises its own decoder directions cleanly, so the co-firing of
  latents that share an unlearnt feature is missing from the null (the README
  gives the measured figures on planted data with independent features in
  superposition).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from ...sae import SparseAutoencoder
from ..graph.codes import strong_firing
from ..graph.communities import cooccurrence_graph
from ..graph.encoder import SparseEncoder
from ..graph.firing import drop_columns

if TYPE_CHECKING:
    from ..._coordinator import Coordinator
    from ..config import AtlasConfig
    from ..inputs import AtlasInputs

log = logging.getLogger(__name__)


def permute_codes(
    matrix: sp.csr_matrix, rng: np.random.Generator, together: np.ndarray | None = None
) -> sp.csr_matrix:
    """``[n_rows, d_sae]`` codes with each column's nonzeros placed on random rows.

    Columns flagged in ``together`` ``[d_sae]`` move with one shared row
    permutation, so whatever they share (a global mode) stays shared.
    """
    csc = sp.csc_matrix(matrix)
    n_rows, d_sae = csc.shape
    counts = np.diff(csc.indptr)
    column = np.repeat(np.arange(d_sae), counts)
    rows = np.empty_like(csc.indices)
    shared = rng.permutation(n_rows)
    moved = np.zeros(csc.nnz, dtype=bool) if together is None else together[column]
    rows[moved] = shared[csc.indices[moved]]
    alone = ~moved
    rows[alone] = distinct_rows(column[alone], counts, n_rows, rng)
    out = sp.csc_matrix((csc.data.copy(), rows, csc.indptr.copy()), shape=csc.shape)
    return out.tocsr()


#: Columns firing on more than this fraction of the rows draw their rows one column
#: at a time; sparser ones draw all together and redraw collisions.
_DENSE_FRACTION = 0.25


def distinct_rows(
    column: np.ndarray, counts: np.ndarray, n_rows: int, rng: np.random.Generator
) -> np.ndarray:
    """For entries ``column`` (sorted; ``counts[j]`` of them in column ``j``, or none
    when the column is left out), rows drawn uniformly without replacement within each
    column: every column's entries land on distinct random rows.

    Sparse columns draw every row at once and redraw the entries that collide with an
    earlier one in their column until none do: the result is invariant under any
    relabelling of the rows, so each column's rows are a uniform random injection, as
    ``rng.choice(n_rows, c, replace=False)`` gives, without a Python loop over columns.
    """
    out = np.empty(column.size, dtype=np.int64)
    if column.size == 0:
        return out
    dense = counts[column] > _DENSE_FRACTION * n_rows
    for j in np.unique(column[dense]):
        at = np.flatnonzero(column == j)
        out[at] = rng.choice(n_rows, at.size, replace=False)
    active = np.flatnonzero(~dense)  # entries of the columns that may still collide
    out[active] = rng.integers(0, n_rows, active.size)
    while active.size:
        key = column[active].astype(np.int64) * n_rows + out[active]
        order = np.argsort(key, kind="stable")
        clash = order[np.flatnonzero(key[order][1:] == key[order][:-1]) + 1]
        if clash.size == 0:
            break
        out[active[clash]] = rng.integers(0, n_rows, clash.size)
        active = active[np.isin(column[active], column[active[clash]])]
    return out


def rewire(adjacency: sp.spmatrix, rng: np.random.Generator) -> sp.csr_matrix:
    """A random graph with the same edge-end count per node and the same weights."""
    upper = sp.triu(sp.csr_matrix(adjacency), k=1).tocoo()
    stubs = np.concatenate([upper.row, upper.col])
    rng.shuffle(stubs)
    m = upper.nnz
    i, j, w = stubs[:m], stubs[m:], upper.data
    keep = i != j
    g = sp.coo_matrix((w[keep], (i[keep], j[keep])), shape=adjacency.shape).tocsr()
    g.sum_duplicates()
    return (g + g.T).tocsr()


@torch.no_grad()
def dictionary_null_codes(
    sae: SparseAutoencoder,
    source: SparseAutoencoder,
    matrix: sp.csr_matrix,
    residual_std: np.ndarray,
    rng: np.random.Generator,
    *,
    together: np.ndarray | None = None,
    batch_size: int = 4096,
    device: str = "cpu",
) -> sp.csr_matrix:
    """Codes, by ``sae``, of rows synthesised from independent features of ``source``.

    Args:
        sae: the analysed SAE (store space); encodes the synthetic rows.
        source: the SAE whose dictionary the rows are made from (``sae`` itself, or
            one trained like it with another seed); same ``d_in`` as ``sae``.
        matrix: ``source``'s real codes ``[n, source d_sae]``, whose per-feature
            activations are reused.
        residual_std: ``[d_in]`` per-unit standard deviation of ``source``'s real
            reconstruction error, the noise added to the synthetic rows.
        rng: random source.
        together: ``[source d_sae]`` features that keep firing together (dense and
            global-mode features: a shared component, not a module).

    Returns:
        ``[n, sae d_sae]`` sparse codes.
    """
    independent = permute_codes(matrix, rng, together)
    W_dec = source.W_dec.detach().float().cpu().numpy()
    b_dec = source.b_dec.detach().float().cpu().numpy()
    encoder = SparseEncoder.of(sae.to(device).eval())
    n, d_sae = independent.shape[0], sae.cfg.d_sae
    parts = []
    for s in range(0, n, batch_size):
        f = independent[s : s + batch_size]
        x = f @ W_dec + b_dec
        x = x + rng.standard_normal(x.shape).astype(np.float32) * residual_std[None, :]
        idx, vals = encoder(torch.from_numpy(np.ascontiguousarray(x)).to(device))
        idx, vals = idx.cpu().numpy(), vals.cpu().numpy()
        parts.append(sp.csr_matrix((vals, (idx[:, 0], idx[:, 1])), shape=(x.shape[0], d_sae)))
    return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, d_sae))


@dataclass(frozen=True)
class DictionarySource:
    """What the dictionary null synthesises rows from (see :mod:`.nulls`)."""

    sae: SparseAutoencoder
    codes: sp.csr_matrix
    """``[n_rows, d_sae]`` the source's codes on the atlas's rows."""
    residual_std: np.ndarray
    """``[d_in]`` per-unit std of the source's reconstruction error."""
    together: np.ndarray
    """``[d_sae]`` the source's dense and global-mode features (fire together)."""
    name: str


def dictionary_source(inp: AtlasInputs) -> DictionarySource:
    """The dictionary null's source: an SAE trained like the analysed one with another
    seed (``null_dictionary == "seed"``: ``inp.null_source``, else the first seed SAE,
    else one trained), or the analysed SAE itself (``"self"``, or when no seed SAE
    can be had)."""
    cfg, sae = inp.cfg, inp.sae
    other, name = None, "self"
    given = inp.null_source
    if given is None and inp.seed_saes:
        given = inp.seed_saes[0]
    if cfg.null_dictionary == "seed":
        if given is not None:
            name = "the given seed SAE" if isinstance(given, SparseAutoencoder) else str(given)
            other = given
        else:
            from .seeds import null_source_sae

            other, why = null_source_sae(
                sae, inp.sae_path, inp.store, progress=inp.progress, coord=inp.coord
            )
            if other is None:
                log.warning(
                    "The dictionary null uses the SAE's own dictionary (%s), a weaker null "
                    "that misses co-firing from features the SAE did not learn; pass "
                    "--seed-sae DIR (an SAE trained the same way with another seed).",
                    why,
                )
                name = f"self ({why})"
            else:
                name = why
    f = inp.main if other is None else inp.firing_of(other)
    if other is not None:
        from ..sae_checks import check_twin

        check_twin(sae, f.sae, inp.store, f"seed SAE '{name}'")  # a reused seed1 may be stale
    residual = np.sqrt(f.codes.residual_sq / max(f.codes.n_rows, 1))
    return DictionarySource(f.sae, f.codes.matrix, residual.astype(np.float32), f.excluded, name)


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class NullInputs:
    """What a null model draws from: the real firings on the compared rows and
    their graph."""

    fires: sp.csr_matrix
    """``[n_rows, d_sae]`` the analysed SAE's strong firings on the compared rows."""
    samples: np.ndarray
    """``[n_rows]`` their samples (for co-occurrence in windows)."""
    rows: np.ndarray
    """``[n_rows]`` the compared rows, as rows of the atlas's codes."""
    real: sp.csr_matrix
    """The real co-occurrence graph of ``fires``."""
    n_edges: int
    """Edges of the real graph: null graphs are built as dense."""
    sae: SparseAutoencoder
    excluded: np.ndarray
    """``[d_sae]`` features kept out of modules."""
    silent: np.ndarray
    """``[d_sae]`` features that fire on fewer of the compared rows than an edge needs
    (:data:`..graph.edges.MIN_COUNT`): no edge of the real graph can touch them."""
    cfg: AtlasConfig
    source: DictionarySource | None
    """The dictionary null's source, for nulls that need one."""


@dataclass(frozen=True)
class NullModel:
    """A null model: ``draw(inputs, rng, coord)`` gives one null graph ``[d_sae, d_sae]``.

    ``coord``: the ranks that count the draw's co-occurrence pairs in parts, all
    drawing it together with the same ``rng`` (None: it counts them whole), as
    :func:`..graph.communities.graph_items` decides."""

    draw: Callable[[NullInputs, np.random.Generator, Coordinator | None], sp.spmatrix]
    needs_source: bool = False
    """Whether it synthesises rows from a :class:`DictionarySource`."""
    counts_pairs: bool = True
    """Whether a draw counts co-occurrence pairs (rewiring reuses the real graph's edges:
    its draws are always shared out among the ranks)."""


def _permutation_graph(
    n: NullInputs, rng: np.random.Generator, coord: Coordinator | None
) -> sp.spmatrix:
    fires = permute_codes(n.fires, rng)
    return cooccurrence_graph(fires, n.samples, n.cfg, n.n_edges, coord).adjacency


def _rewiring_graph(
    n: NullInputs, rng: np.random.Generator, coord: Coordinator | None
) -> sp.spmatrix:
    return rewire(n.real, rng)


def _dictionary_graph(
    n: NullInputs, rng: np.random.Generator, coord: Coordinator | None
) -> sp.spmatrix:
    # Drawn in parts, every rank synthesises and encodes the same rows (from the same
    # rng) and counts its block of their pairs: only the counting is split.
    src = n.source
    synthetic = dictionary_null_codes(
        n.sae,
        src.sae,
        src.codes[n.rows],
        src.residual_std,
        rng,
        together=src.together,
        batch_size=n.cfg.batch_size,
        device=n.cfg.device,
    )
    # Latents (nearly) silent on the real rows stay out: synthetic rows combine features
    # that never fire together in the data, and such rows can wake latents the SAE never
    # uses, which then fire on the same few rows: a clique of dead latents (phi 0.7-0.9
    # on 5-14 rows) that outweighed real modules in some draws, and that the real graph,
    # where they fire 0-2 times, can never have.
    fires = drop_columns(strong_firing(synthetic, n.cfg.min_activation), n.excluded | n.silent)
    return cooccurrence_graph(fires, n.samples, n.cfg, n.n_edges, coord).adjacency


#: The null models by the name `AtlasConfig.nulls` takes, in the order they run
#: (each draws from its own seed stream, numbered by its place in `nulls`).
NULL_MODELS: dict[str, NullModel] = {
    "permutation": NullModel(_permutation_graph),
    "rewiring": NullModel(_rewiring_graph, counts_pairs=False),
    "dictionary": NullModel(_dictionary_graph, needs_source=True),
}
#: Whose dictionary the dictionary null synthesises rows from (`AtlasConfig.null_dictionary`).
NULL_DICTIONARIES = ("seed", "self")
