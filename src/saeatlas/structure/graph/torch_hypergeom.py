"""The pair tests in torch, on any device: :func:`.hypergeom.hypergeom_upper_tail`
as float64 tensor code.

The same algorithm, step for step (see :func:`.hypergeom.hypergeom_upper_tail`):
the first term from the same table of log-factorials (scipy's ``gammaln``, computed
once on the host and moved to the device), added in the same order, then blocks
of 16, 32, ... terms from the ratio of consecutive terms until the bound on the
rest is below ``TAIL_RTOL`` of the sum. The values agree with the numpy path to
about 1e-15 relative (only the order of a block's sum differs); the few wide
cases that need more than ``TAIL_MAX_TERMS`` terms go to scipy on the host, as
there. Memory is bounded by the pairs given and one block of ratios
(:data:`BLOCK_VALUES`), never by the number of pairs counted.

Past ``2**23`` units of counting the log-factorials are no longer tabulated:
``torch.lgamma`` replaces scipy's ``gammaln`` (both accurate to about 1e-8
relative in the p-value there, as the numpy path states).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .hypergeom import (
    TAIL_RTOL,
    TAIL_SCIPY,
    TAIL_SUM,
    ArrayOps,
    UpperTail,
    log_factorial_table,
    log_pmf_from,
    sum_away,
)

#: Ratios held at once while summing a block of terms (``[values, width]`` float64).
BLOCK_VALUES = 1 << 22


def torch_upper_tail(a: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, n: int) -> UpperTail:
    """``P(X >= a)``, ``X ~ Hypergeom(n, n_i, n_j)``, for 1-D int64 tensors on one device:
    :func:`.hypergeom.hypergeom_upper_tail` in torch. Returns host arrays."""
    p, method = torch_upper_tail_tensors(a, n_i, n_j, n)
    return UpperTail(p.cpu().numpy(), method.cpu().numpy())


def torch_upper_tail_tensors(
    a: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`torch_upper_tail` as device tensors ``(p float64, method uint8)``."""
    from scipy.stats import hypergeom  # slow to import, and rarely needed

    n = int(n)
    if a.numel() and (min(n_i.min(), n_j.min()) < 0 or max(n_i.max(), n_j.max()) > n):
        raise ValueError(f"Margins `n_i`, `n_j` must lie in [0, n={n}].")
    lo = torch.clamp(n_i + n_j - n, min=0)
    hi = torch.minimum(n_i, n_j)
    p = (a <= lo).to(torch.float64)  # outside the support; a > hi has p = 0
    method = torch.full(a.shape, TAIL_SUM, dtype=torch.uint8, device=a.device)
    mode = torch.div((n_i + 1) * (n_j + 1), n + 2, rounding_mode="floor")
    inside = (a > lo) & (a <= hi)
    for upper in (True, False):
        sel = torch.nonzero(inside & ((a > mode) if upper else (a <= mode))).squeeze(1)
        if sel.numel() == 0:
            continue
        k0 = a[sel] if upper else a[sel] - 1
        total, rest = _sum_away(k0, n_i[sel], n_j[sel], n, 1 if upper else -1)
        p[sel] = total + rest if upper else 1.0 - total
        wide = sel[rest > TAIL_RTOL * total]
        if wide.numel():
            method[wide] = TAIL_SCIPY
            args = (x[wide].cpu().numpy() for x in (a, n_i, n_j))
            a_w, ni_w, nj_w = args
            p[wide] = torch.from_numpy(hypergeom.sf(a_w - 1, n, ni_w, nj_w)).to(p.device)
    return p.clamp(0.0, 1.0), method


def _sum_away(k0, n_i, n_j, n: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum, rest)``: :func:`.hypergeom._sum_away` on ``k0``'s device."""
    dev = k0.device
    ops = ArrayOps(
        empty=lambda m: torch.empty(m, dtype=torch.float64, device=dev),
        arange=lambda m: torch.arange(m, device=dev),
        f64=lambda x: x.to(torch.float64),
        exp=torch.exp,
        log_pmf=log_pmf,
        at_least=lambda x, v: torch.clamp(x, min=v),
        nonzero=lambda m: torch.nonzero(m).squeeze(1),
        size=lambda x: x.numel(),
        cumprod=lambda x: torch.cumprod(x, dim=1),
        row_sum=lambda x: x.sum(dim=1),
        block_values=BLOCK_VALUES,
    )
    return sum_away(k0, n_i, n_j, n, step, ops)


def log_pmf(k, n_i, n_j, n: int) -> torch.Tensor:
    """``log P(X = k)`` (:func:`.hypergeom.log_pmf`, the same terms in the same order)."""
    return log_pmf_from(_log_factorial(n, k.device), k, n_i, n_j, n)


@functools.lru_cache(maxsize=4)
def _log_factorial(n: int, device: torch.device):
    """``x -> log(x!)`` for integer tensors ``0 <= x <= n`` on ``device``: the host's
    table (:func:`.hypergeom.log_factorial_table`) moved there, or ``lgamma``."""
    table = log_factorial_table(n)
    if table is None:
        return lambda x: torch.lgamma(torch.as_tensor(x, dtype=torch.float64, device=device) + 1)
    table = torch.from_numpy(table).to(device)
    return lambda x: table[x]


def as_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host integer array as an int64 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)).to(device)
