"""The sparsity–reconstruction frontier and its knee."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def _points(l0: object, loss: object) -> tuple[np.ndarray, np.ndarray]:
    """``l0`` and ``loss`` as float arrays of one point each: arrays of other lengths ended
    in numpy's "all keys need to be the same shape", and a NaN L0 (or loss) was put on the
    frontier, or left off it, and the knee taken of the rest without a word."""
    try:
        l0, loss = np.asarray(l0, float), np.asarray(loss, float)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"`l0` and `loss` must be lists of numbers, one per point: {e}") from e
    if l0.ndim != 1 or l0.shape != loss.shape:
        raise ConfigError(
            f"`l0` and `loss` must be lists of numbers of one length (one per point), got "
            f"shapes {l0.shape} and {loss.shape}."
        )
    bad = np.flatnonzero(~(np.isfinite(l0) & np.isfinite(loss)))
    if bad.size:
        raise ConfigError(
            f"The point(s) at {bad.tolist()[:5]} have an L0 or loss that is NaN or infinite; "
            "leave them out (a member that did not train has no place on the frontier)."
        )
    return l0, loss


def pareto_front(l0: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both L0 and loss (lower is better),
    sorted by L0."""
    l0, loss = _points(l0, loss)
    order = np.lexsort((loss, l0))
    front, best = [], np.inf
    for i in order:
        if loss[i] < best:
            front.append(int(i))
            best = loss[i]
    return np.array(front, dtype=np.int64)


def knee(l0: np.ndarray, loss: np.ndarray, *, silent: bool = False) -> int:
    """Index of the knee of the frontier: after scaling log L0 and loss to [0, 1],
    the frontier point farthest below the chord joining its two ends (the
    "Kneedle" rule of Satopaa et al. 2011). Frontiers of one or two points
    return the point of lowest loss. Points of L0 0 (SAEs that fire no latent) are left
    out while any other is on the frontier; ``silent``: keep them (sweeps written before).
    """
    front = pareto_front(l0, loss)
    if not len(front):  # numpy's "attempt to get argmin of an empty sequence"
        raise ConfigError("No points to take the knee of: give at least one L0 and loss.")
    live = front[np.asarray(l0, float)[front] > 0]
    if len(live) and not silent:
        # log(1e-12) of an SAE that fires nothing squeezed every other L0 into the top
        # tenth of the axis, and the knee fell on that SAE: a sweep recommended it
        front = live
    if len(front) <= 2:
        return int(front[np.argmin(np.asarray(loss)[front])])
    x = np.log(np.maximum(np.asarray(l0, float)[front], 1e-12))
    y = np.asarray(loss, float)[front]
    x = (x - x.min()) / max(np.ptp(x), 1e-12)
    y = (y - y.min()) / max(np.ptp(y), 1e-12)
    # loss falls as L0 grows: the chord runs from (0, 1) to (1, 0); the knee lies
    # farthest below it, where 1 - x - y is largest.
    return int(front[np.argmax(1.0 - x - y)])


#: How ``sweep`` picks its recommended point (recorded as its ``rule``).
RULE = "knee of the held-out L0-FVU frontier (Kneedle on log L0; Satopaa et al. 2011)"


def check_recorded(
    values: list[float],
    l0: list[float],
    loss: list[float],
    on_front: list[bool],
    recommended: int,
    rule: str,
) -> None:
    """Raise ``ValueError`` when a sweep's recorded points disagree with the frontier and
    knee their L0 and loss give: a value listed twice, a point's ``on_front`` flag, or the
    ``recommended`` index (where the sweep records this :data:`RULE`). Points reordered by
    hand, or a value edited, moved the recommendation to another point ("k = 32 is the
    sweep's recommendation" of a knee at 16) without a word."""
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"the values {twice} are listed more than once")
    front = set(pareto_front(np.asarray(l0), np.asarray(loss)).tolist())
    flagged = {i for i, on in enumerate(on_front) if on}
    if flagged != front:
        raise ValueError(
            f"the points marked `on_front` are {sorted(flagged)}, but their L0 and FVU put "
            f"{sorted(front)} on the frontier"
        )
    best = knee(np.asarray(l0), np.asarray(loss)) if l0 else recommended
    # a sweep recorded before points of L0 0 were left out may recommend one
    if rule == RULE and recommended not in (best, knee(l0, loss, silent=True) if l0 else best):
        raise ValueError(
            f"`recommended` is point {recommended}, but the knee of the points' L0 and FVU "
            f"is point {best}"
        )
