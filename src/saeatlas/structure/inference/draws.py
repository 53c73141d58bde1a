"""A real figure against a null model's draws: its z-score and p-value, one rule for every
null of the atlas (modularity and module cohesion against their nulls, the geometry's
AMI, the ablation's random unit sets).

``z = (real - mean) / std`` over the ``n`` draws. A null whose draws have no spread (all
equal, up to rounding: a spread of at most :data:`..constants.MIN_STD` of the figures'
size) has no z: on the cleaned correlations of independent units no edge survives, every
draw's modularity is 0, and a floor on the spread turned a modularity of 0.45 into z
449,293 and a parametric p of 1e-17 that no draw measured. There z is NaN (null in
``atlas.json``) and the p-value is the draws' rank, ``(1 + #{draw >= real}) / (1 + n)``,
which holds whatever the null's shape but cannot go below ``1 / (1 + n)``: a verdict at
``alpha`` 0.05 needs at least 19 draws of such a null.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..constants import MIN_STD


def no_spread(real: float, draws: np.ndarray) -> bool:
    """Whether the draws (at least two) are all equal up to rounding."""
    std = float(np.std(draws, ddof=1))
    return std <= MIN_STD * max(abs(real), float(np.abs(draws).max()))


def draws_z(real: float, draws: np.ndarray) -> float:
    """``(real - mean) / std`` of the draws; NaN with fewer than two draws or none of
    them spread (:func:`no_spread`), or a real figure of NaN."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.size < 2 or not np.isfinite(real) or no_spread(real, draws):
        return float("nan")
    return float((real - draws.mean()) / draws.std(ddof=1))


def rank_p(real: float, draws: np.ndarray, tol: float = 0.0) -> float:
    """``(1 + #{draw >= real - tol}) / (1 + n)``: the share of draws at least as high as
    the real figure, counting it as one (NaN without draws or real figure)."""
    draws = np.asarray(draws, dtype=np.float64)
    if not draws.size or not np.isfinite(real):
        return float("nan")
    return (1 + int((draws >= real - tol).sum())) / (1 + draws.size)


def draws_p(real: float, draws: np.ndarray, tail: Callable[[float, int], float]) -> float:
    """One-sided p-value of ``real`` against the draws: ``tail(z, n)`` (a parametric tail
    of the z-score over ``n`` draws) where the draws have a spread, else :func:`rank_p`
    (NaN with fewer than two draws)."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.size < 2 or not np.isfinite(real):
        return float("nan")
    z = draws_z(real, draws)
    return float(tail(z, draws.size)) if np.isfinite(z) else rank_p(real, draws)
