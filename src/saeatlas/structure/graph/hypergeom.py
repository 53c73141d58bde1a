"""Exact one-sided tests of co-firing counts, and false discovery rate control.

Given two latents' firing counts ``n_i`` and ``n_j`` over ``n`` units of
counting, their joint count under independence is hypergeometric;
:func:`hypergeom_upper_tail` gives ``P(X >= a)`` for many pairs at once, to a
relative precision of ``TAIL_RTOL``, by summing terms from the observed count
outwards and handing the few wide cases to scipy. :func:`benjamini_hochberg`
turns p-values into q-values (Benjamini & Hochberg 1995).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.special import gammaln

#: How :func:`hypergeom_upper_tail` computed each value, as stored in ``UpperTail.method``.
TAIL_SUM, TAIL_SCIPY = 0, 1
#: Summing stops once the bound on the terms left is below this fraction of the sum.
TAIL_RTOL = 1e-10
#: Most terms summed per p-value before handing it to scipy: enough for 1e-10 when the
#: standard deviation of the joint count is below a few hundred.
TAIL_MAX_TERMS = 4096
#: Largest number of units for which log-factorials are tabulated (64 MiB).
_TABLE_MAX = 1 << 23


class UpperTail(NamedTuple):
    """One-sided p-values ``P(X >= a)``, ``X ~ Hypergeom(n, n_i, n_j)``."""

    p: np.ndarray
    """float64 p-values."""
    method: np.ndarray
    """uint8: ``TAIL_SUM`` (summed here) or ``TAIL_SCIPY`` (``scipy.stats.hypergeom.sf``)."""


def hypergeom_upper_tail(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> UpperTail:
    """P-value of ``a`` or more joint firings if latents ``i`` and ``j`` fired independently.

    Given the margins, the joint count under independence is hypergeometric:
    ``X ~ Hypergeom(n, n_i, n_j)``, ``P(X = k) = C(n_i, k) C(n - n_i, n_j - k) / C(n, n_j)``
    on ``max(0, n_i + n_j - n) <= k <= min(n_i, n_j)``, with mean ``mu = n_i n_j / n``.
    The result is ``scipy.stats.hypergeom.sf(a - 1, n, n_i, n_j)``, exact in both paths:

    - Summed here (``TAIL_SUM``): terms are added away from ``a`` on the side of the
      tail without the mode ``floor((n_i + 1)(n_j + 1) / (n + 2))``: ``sum_{k >= a}
      P(k)`` when ``a`` is above the mode, else ``1 - sum_{k < a} P(k)``. The first
      term comes from log-factorials, the next ones from the ratio of consecutive
      terms. The pmf is log-concave, so that ratio only falls away from the mode and
      the terms not yet added are at most ``t / (1 - r)`` (``t`` the next term, ``r``
      the ratio after it). Summing stops when that bound is below ``TAIL_RTOL`` of the
      sum: within 16 terms for the typical pair (``mu`` of a few), in about 7 standard
      deviations at worst. Float64 log-factorials limit the relative accuracy to about
      ``1e-8`` at a million units. Costs about 0.3 us per value.
    - When ``TAIL_MAX_TERMS`` terms do not reach that bound (standard deviation above
      a few hundred, ``a`` within a few of them of the mean), scipy's exact routine
      (``TAIL_SCIPY``). That takes 2-6 us per value at a million units or more (and
      175 us at 10^5 units, where this path is never taken), too slow for every one
      of 10^8 pairs.

    Args:
        a, n_i, n_j: integer arrays that broadcast (joint count, margins).
        n: number of units, ``n >= n_i, n_j``.
    """
    from scipy.stats import hypergeom  # slow to import, and rarely needed

    a, n_i, n_j = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (a, n_i, n_j)))
    shape = a.shape
    a, n_i, n_j = a.ravel(), n_i.ravel(), n_j.ravel()
    n = int(n)
    if a.size and (min(n_i.min(), n_j.min()) < 0 or max(n_i.max(), n_j.max()) > n):
        raise ValueError(f"Margins `n_i`, `n_j` must lie in [0, n={n}].")
    lo, hi = np.maximum(0, n_i + n_j - n), np.minimum(n_i, n_j)
    p = np.where(a <= lo, 1.0, 0.0)  # outside the support; a > hi has p = 0
    method = np.full(a.size, TAIL_SUM, dtype=np.uint8)
    mode = (n_i + 1) * (n_j + 1) // (n + 2)
    inside = (a > lo) & (a <= hi)
    for upper in (True, False):
        sel = np.flatnonzero(inside & ((a > mode) if upper else (a <= mode)))
        if sel.size == 0:
            continue
        k0 = a[sel] if upper else a[sel] - 1
        total, rest = sum_away(k0, n_i[sel], n_j[sel], n, 1 if upper else -1)
        p[sel] = total + rest if upper else 1.0 - total
        sel = sel[rest > TAIL_RTOL * total]
        if sel.size:
            method[sel] = TAIL_SCIPY
            p[sel] = hypergeom.sf(a[sel] - 1, n, n_i[sel], n_j[sel])
    return UpperTail(np.clip(p, 0.0, 1.0).reshape(shape), method.reshape(shape))


class ArrayOps(NamedTuple):
    """What :func:`sum_away` needs of an array library (numpy, or torch on a device)."""

    empty: Callable  # n -> float64 [n]
    arange: Callable  # n -> int [n]
    f64: Callable  # x -> x as float64
    exp: Callable
    log_pmf: Callable  # (k, n_i, n_j, n) -> log P(X = k)
    cumprod: Callable  # [rows, width] -> cumulative products along the rows
    row_sum: Callable  # [rows, width] -> [rows]
    block_values: int  # ratios held at once while summing a block
    at_least: Callable  # (x, floor) -> elementwise max
    nonzero: Callable  # mask -> indices
    size: Callable  # x -> number of values


def sum_away(k0, n_i, n_j, n: int, step: int, ops: ArrayOps | None = None):
    """Sum of ``P(k)`` for ``k = k0, k0 + step, ...`` and a bound on the terms not summed.

    ``k0`` must be on the far side of the mode from the direction ``step``, so the
    ratios of consecutive terms are below 1 and keep falling. Terms are added in blocks
    of 16, 32, 64, ... (a cumulative product of ratios per block) until the bound on the
    rest is below ``TAIL_RTOL`` of the sum, or ``TAIL_MAX_TERMS`` were added. Returns
    ``(sum, rest)``. ``ops``: the array library (default numpy; :mod:`.torch_hypergeom`
    passes torch's, so both run these same steps).
    """
    ops = ops or NUMPY_OPS
    out_total, out_rest = ops.empty(ops.size(k0)), ops.empty(ops.size(k0))
    idx = ops.arange(ops.size(k0))
    k = ops.f64(k0)
    ni, nj = ops.f64(n_i), ops.f64(n_j)
    base = n - ni - nj
    t = ops.exp(ops.log_pmf(k0, n_i, n_j, n))  # the last term added
    total = t + 0.0
    width, n_terms = 16, 1
    while ops.size(idx):
        block, t = _block_sum(t, k, ni, nj, base, step, width, ops)
        total += block
        k += step * width
        n_terms += width
        # r < 1 here (log-concavity); the floor only guards rounding and t = 0 past the edge.
        rest = t * _ratio(k, ni, nj, base, step)
        rest /= ops.at_least(1.0 - _ratio(k + step, ni, nj, base, step), 1e-300)
        done = rest <= TAIL_RTOL * total
        if n_terms + 2 * width > TAIL_MAX_TERMS:
            done[:] = True
        out_total[idx[done]], out_rest[idx[done]] = total[done], rest[done]
        left = ops.nonzero(~done)
        idx, k, ni, nj, base, t, total = (x[left] for x in (idx, k, ni, nj, base, t, total))
        width *= 2
    return out_total, out_rest


def _block_sum(t, k, ni, nj, base, step: int, width: int, ops: ArrayOps):
    """Sum of the ``width`` terms after the term ``t`` at ``k``, and the last of them."""
    total, last = t + 0.0, t + 0.0
    offsets = step * ops.f64(ops.arange(width))
    rows = max(1, ops.block_values // width)  # bounds the [rows, width] temporaries
    for s in range(0, ops.size(t), rows):
        sl = slice(s, s + rows)
        ks = k[sl, None] + offsets
        ratios = _ratio(ks, ni[sl, None], nj[sl, None], base[sl, None], step)
        terms = t[sl, None] * ops.cumprod(ratios)
        total[sl], last[sl] = ops.row_sum(terms), terms[:, -1]
    return total, last


def _ratio(k, ni, nj, base, step: int) -> np.ndarray:
    """``P(k + step) / P(k)``; ``base = n - n_i - n_j``. 0 at the edge of the support.
    Plain arithmetic: numpy arrays or torch tensors."""
    if step > 0:
        return (ni - k) * (nj - k) / ((k + 1) * (base + k + 1))
    return k * (base + k) / ((ni - k + 1) * (nj - k + 1))


def log_pmf(k, n_i, n_j, n: int) -> np.ndarray:
    """``log P(X = k)``: ``log C(n_i, k) + log C(n - n_i, n_j - k) - log C(n, n_j)``."""
    return log_pmf_from(_log_factorial(n), k, n_i, n_j, n)


def log_pmf_from(lf: Callable, k, n_i, n_j, n: int):
    """:func:`log_pmf` from ``lf: x -> log(x!)``, for numpy arrays or torch tensors
    (the same terms in the same order, so the same values from the same table)."""
    return (
        lf(n_i)
        - lf(k)
        - lf(n_i - k)
        + lf(n - n_i)
        - lf(n_j - k)
        - lf(n - n_i - n_j + k)
        - lf(n)
        + lf(n_j)
        + lf(n - n_j)
    )


@functools.lru_cache(maxsize=4)
def log_factorial_table(n: int) -> np.ndarray | None:
    """``[n + 1]`` float64 ``log(x!)`` for ``x = 0..n``, or None past ``2**23`` units."""
    if n > _TABLE_MAX:
        return None
    return gammaln(np.arange(n + 1, dtype=np.float64) + 1.0)


def _log_factorial(n: int) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> log(x!)`` for integers ``0 <= x <= n``: a table lookup when ``n`` is small."""
    table = log_factorial_table(n)
    if table is None:
        return lambda x: gammaln(np.asarray(x, dtype=np.float64) + 1.0)
    return lambda x: table[x]


def benjamini_hochberg(
    p: np.ndarray, n_tests: int | None = None, *, skip_nan: bool = False
) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values (q-values) of ``p`` among ``n_tests``.

    With the ``m = n_tests`` p-values sorted, ``q_(r) = min_{r' >= r} p_(r') m / r'``
    (capped at 1); rejecting ``q <= alpha`` controls the false discovery rate at
    ``alpha`` for independent or positively dependent tests. Tests not in ``p`` are
    taken to have ``p = 1``: they only enlarge ``m``. With ``skip_nan`` a NaN in ``p``
    is a test not made: its q is NaN and it does not count in ``m``.
    """
    p = np.asarray(p, dtype=np.float64)
    if skip_nan:
        q = np.full(p.shape, np.nan)
        made = ~np.isnan(p)
        q[made] = benjamini_hochberg(p[made], n_tests)
        return q
    m = p.size if n_tests is None else int(n_tests)
    if m < p.size:
        raise ValueError(f"`n_tests`={m} is less than the {p.size} p-values given.")
    if p.size and not (p.min() >= 0 and p.max() <= 1):  # also catches NaN
        raise ValueError("p-values must lie in [0, 1] (got values outside, or NaN).")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m / np.arange(1, p.size + 1))
    q = np.empty_like(p)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


NUMPY_OPS = ArrayOps(
    empty=np.empty,
    arange=np.arange,
    f64=lambda x: x.astype(np.float64),
    exp=np.exp,
    log_pmf=log_pmf,
    at_least=np.maximum,
    nonzero=np.flatnonzero,
    size=np.size,
    cumprod=lambda x: np.cumprod(x, axis=1),
    row_sum=lambda x: x.sum(axis=1),
    block_values=1 << 20,  # 8 MiB
)
