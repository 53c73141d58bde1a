"""Scores of the stored pairs of a co-occurrence count: affinities and p-values.

``affinity`` scores the stored pairs of a :class:`.cooccurrence.Cooccurrence`
(phi, NPMI, Jaccard) and ``pair_pvalues`` tests each against independence with
the same margins (:mod:`.hypergeom`), streaming over the pairs in chunks of whole
rows of the counts (:func:`chunk_rows`), so that temporary memory is bounded by
the chunk. The tests run on numpy in a thread pool on the CPU, or as torch code
on any device (:mod:`.torch_hypergeom`, the same p-values to about 1e-15):
``device`` and ``engine`` choose as in :func:`.cooccurrence.count_cooccurrence`
(``"auto"``: numpy on the CPU, where it tested 200k pairs 1.5-2x faster than
torch on one core; torch on any other device). :mod:`.edges` builds graphs from
these scores.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import torch_hypergeom as th
from .cooccurrence import Cooccurrence, _engine, _n_threads
from .hypergeom import hypergeom_upper_tail

#: Pairs scored per step when streaming over stored pairs (bounds temporary memory).
PAIR_CHUNK = 1 << 16
#: Pairs scored per step by the torch engine (a few float64 tensors of this length).
TORCH_PAIR_CHUNK = 1 << 21

# ---------------------------------------------------------------- affinities
# Each takes the joint count ``a``, the margins ``n_i``, ``n_j`` and the number of
# units ``n`` (arrays that broadcast) and returns float64.


def phi(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> np.ndarray:
    """Phi coefficient (Pearson correlation of the two binary indicators).

    ``(a d - b c) / sqrt((a + b)(c + d)(a + c)(b + d)) = (a n - n_i n_j) /
    sqrt(n_i (n - n_i) n_j (n - n_j))``; 0 when a margin is 0 (a latent that fires
    on no unit or on every unit). Lies in [-1, 1].
    """
    a, n_i, n_j = (np.asarray(x, dtype=np.float64) for x in (a, n_i, n_j))
    den = np.sqrt(n_i * (n - n_i) * n_j * (n - n_j))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a * n - n_i * n_j) / den
    return np.where(den > 0, out, 0.0)


def npmi(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> np.ndarray:
    """Normalised pointwise mutual information (Bouma 2009).

    ``log(p_ij / (p_i p_j)) / -log(p_ij)`` with ``p_ij = a / n``, ``p_i = n_i / n``:
    -1 for pairs that never co-fire, 0 under independence, 1 when the two always
    fire together. 0 when ``p_ij = 1`` (both fire on every unit).
    """
    a, n_i, n_j = (np.asarray(x, dtype=np.float64) for x in (a, n_i, n_j))
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(a * n) - np.log(n_i) - np.log(n_j)
        out = pmi / -np.log(a / n)
    return np.where(a <= 0, -1.0, np.where(a >= n, 0.0, out))


def jaccard(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> np.ndarray:
    """Jaccard index of the units each fires on: ``a / (a + b + c) = a / (n_i + n_j - a)``.

    0 when neither fires (``n`` is unused; it keeps the signature of the others).
    """
    a, n_i, n_j = (np.asarray(x, dtype=np.float64) for x in (a, n_i, n_j))
    union = n_i + n_j - a
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, a / union, 0.0)


AFFINITIES: dict[str, Callable[..., np.ndarray]] = {"phi": phi, "npmi": npmi, "jaccard": jaccard}


def affinity_fn(kind: str) -> Callable[..., np.ndarray]:
    if kind not in AFFINITIES:
        allowed = ", ".join(repr(k) for k in AFFINITIES)
        raise ValueError(f"Unknown affinity {kind!r}; expected one of: {allowed}.")
    return AFFINITIES[kind]


def affinity(co: Cooccurrence, kind: str = "phi", *, n_threads: int | None = None) -> np.ndarray:
    """``[n_pairs]`` float64 affinity of each stored pair, aligned with ``co.pairs()``."""
    fn = affinity_fn(kind)
    return per_pair(co, lambda a, n_i, n_j: fn(a, n_i, n_j, co.n_rows), n_threads)


def per_pair(co: Cooccurrence, fn: Callable, n_threads: int | None) -> np.ndarray:
    """``[n_pairs]`` float64 ``fn(a, n_i, n_j)`` over the stored pairs, chunk by chunk."""
    out = np.empty(co.n_pairs, dtype=np.float64)

    def fill(bounds: tuple[int, int]) -> None:
        sl, row, col, a = chunk(co, *bounds)
        out[sl] = fn(a, co.n_fire[row], co.n_fire[col])

    with ThreadPoolExecutor(max_workers=_n_threads(n_threads)) as pool:
        list(pool.map(fill, chunk_rows(co.counts.indptr)))
    return out


def chunk_rows(indptr: np.ndarray, size: int = PAIR_CHUNK) -> list[tuple[int, int]]:
    """Ranges of whole rows ``[r0, r1)`` of a CSR holding about ``size`` entries each."""
    n_rows, bounds, r0 = indptr.size - 1, [], 0
    while r0 < n_rows:
        r1 = int(np.searchsorted(indptr, indptr[r0] + size, side="right")) - 1
        r1 = min(max(r1, r0 + 1), n_rows)
        if indptr[r1] > indptr[r0]:
            bounds.append((r0, r1))
        r0 = r1
    return bounds


def chunk(co: Cooccurrence, r0: int, r1: int) -> tuple[slice, np.ndarray, np.ndarray, np.ndarray]:
    """Stored pairs of rows ``[r0, r1)``: ``(slice into the pair arrays, row, col, count)``."""
    indptr = co.counts.indptr
    s0, s1 = int(indptr[r0]), int(indptr[r1])
    row = np.repeat(np.arange(r0, r1, dtype=np.int32), np.diff(indptr[r0 : r1 + 1]))
    return slice(s0, s1), row, co.counts.indices[s0:s1], co.counts.data[s0:s1]


# ---------------------------------------------------------------- significance


def pair_pvalues(
    co: Cooccurrence,
    *,
    n_threads: int | None = None,
    device: str | torch.device | None = None,
    engine: str = "auto",
) -> np.ndarray:
    """``[n_pairs]`` p-value of each stored pair (see :func:`hypergeom_upper_tail`), on
    ``device`` (``engine``: see :mod:`.edges`)."""
    n = co.n_rows
    use_torch, dev = _engine(engine, device)
    if not use_torch:
        return per_pair(co, lambda a, n_i, n_j: hypergeom_upper_tail(a, n_i, n_j, n).p, n_threads)
    out = np.empty(co.n_pairs, dtype=np.float64)
    for sl, _, _, a, n_i, n_j in torch_chunks(co, dev):
        out[sl] = th.torch_upper_tail_tensors(a, n_i, n_j, n)[0].cpu().numpy()
    return out


def torch_chunks(co: Cooccurrence, dev: torch.device):
    """The stored pairs in chunks of whole rows of ``co.counts`` on ``dev``: ``(slice
    into the pair arrays, row, col, a, n_i, n_j)``, the last five int64 tensors."""
    n_fire = th.as_tensor(co.n_fire, dev)
    for r0, r1 in chunk_rows(co.counts.indptr, TORCH_PAIR_CHUNK):
        sl, row, col, a = chunk(co, r0, r1)
        row, col, a = (th.as_tensor(x, dev) for x in (row, col, a))
        yield sl, row, col, a, n_fire[row], n_fire[col]
