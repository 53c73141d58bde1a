"""Per-unit running mean and variance, merged batch by batch.

Uses the pairwise update of Chan, Golub and LeVeque (1979): for two parts with
counts n_a, n_b, means m_a, m_b and sums of squared deviations M2_a, M2_b,

    delta = m_b - m_a
    m     = m_a + delta * n_b / n
    M2    = M2_a + M2_b + delta**2 * n_a * n_b / n

which stays accurate where the textbook sum-of-squares formula cancels.
Everything is accumulated in float64.
"""

from __future__ import annotations

import numpy as np
import torch


class RunningMoments:
    """Mean and variance of each column over all rows seen so far.

    Args:
        n_units: number of columns.
    """

    block_rows = 512

    def __init__(self, n_units: int) -> None:
        self.count = 0
        self.mean = np.zeros(n_units, dtype=np.float64)
        self.m2 = np.zeros(n_units, dtype=np.float64)

    def update(self, x: torch.Tensor | np.ndarray) -> None:
        """Merge a batch ``x`` of shape ``[rows, n_units]``."""
        for n_b, mean_b, m2_b in block_moments(x, self.block_rows):
            self.merge(n_b, mean_b, m2_b)

    def merge(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Merge the moments of another part (count, mean, sum of squared deviations)."""
        if n_b == 0:
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / n)
        self.count = n

    @property
    def var(self) -> np.ndarray:
        """Population variance of each column (0 when fewer than one row)."""
        if self.count == 0:
            return np.zeros_like(self.m2)
        return self.m2 / self.count

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation of each column."""
        return np.sqrt(self.var)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that restore this object with :meth:`from_state`."""
        return {"count": np.array([self.count], dtype=np.int64), "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> RunningMoments:
        obj = cls(len(state["mean"]))
        obj.count = int(state["count"][0])
        obj.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        obj.m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        return obj


def block_moments(
    x: torch.Tensor | np.ndarray, block_rows: int = RunningMoments.block_rows
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Count, mean and sum of squared deviations of each block of ``block_rows`` rows
    of ``x`` ``[rows, n_units]``, in float64: what :meth:`RunningMoments.update`
    merges, in order. Blocks are independent, so this may run on any thread while the
    merges stay in order (and the float sums reproducible)."""
    x = torch.as_tensor(x)
    # Each block is converted to float64 into one buffer reused for every block: as
    # exact as converting the whole batch, at a fraction of the cost (the buffer stays
    # in cache, and fresh memory would cost a page fault per 4 KiB).
    scratch = torch.empty((min(block_rows, x.shape[0]), x.shape[1]), dtype=torch.float64)
    out = []
    for s in range(0, x.shape[0], block_rows):
        block = scratch[: min(block_rows, x.shape[0] - s)]
        block.copy_(x[s : s + block_rows])
        var_b, mean_b = torch.var_mean(block, dim=0, correction=0)
        out.append((block.shape[0], mean_b.numpy(), (var_b * block.shape[0]).numpy()))
    return out
