"""Matching two SAE dictionaries: which latent of one is which latent of the other.

SAEs trained with different seeds learn their latents in different orders and
with different splits, so their feature labels cannot be compared directly
(Paulo & Belrose 2025). :func:`match_features` pairs the decoder directions
one-to-one by the Hungarian algorithm on their cosine similarities (maximising
the total), exactly up to ``MAX_DENSE_MATCH`` cosines and by a blocked greedy
approximation beyond; the mean matched cosine says how alike the two
dictionaries are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..._linalg import unit_rows
from ...errors import ShapeError

#: Largest ``d_sae_a * d_sae_b`` matched exactly: 8192^2 cosines are 256 MiB in float32,
#: and ``linear_sum_assignment`` works on a float64 copy (512 MiB).
MAX_DENSE_MATCH = 8192 * 8192


@dataclass(frozen=True)
class FeatureMatch:
    """A one-to-one matching of the features of two SAEs by decoder cosine."""

    pairs: np.ndarray
    """``[n_pairs, 2]`` int64: (feature of A, feature of B), sorted by A;
    ``n_pairs = min(d_sae_a, d_sae_b)``."""
    cosine: np.ndarray
    """``[d_sae_a]`` cosine of each feature of A with its match (NaN when unmatched)."""
    method: str
    """'hungarian' (exact maximum total cosine) or 'greedy+hungarian' (large dictionaries)."""

    @property
    def mean_cosine(self) -> float:
        """Mean matched cosine over the matched features of A (Paulo & Belrose 2025)."""
        c = self.cosine[~np.isnan(self.cosine)]
        return float(c.mean()) if c.size else float("nan")


def match_features(
    W_a, W_b, *, max_dense: int = MAX_DENSE_MATCH, block: int = 1024, n_candidates: int = 8
) -> FeatureMatch:
    """Match the decoder rows of two SAEs one to one by cosine similarity.

    Paulo & Belrose 2025 ("Sparse autoencoders trained on the same data learn
    different features") pair the latents of two SAEs with the Hungarian
    algorithm on decoder cosine and report the matched cosines. That needs the
    dense ``[d_sae_a, d_sae_b]`` cosine matrix; up to ``max_dense`` entries
    (8192^2, 256 MiB in float32) it is built and solved exactly
    (``scipy.optimize.linear_sum_assignment``, maximising total cosine).

    Larger dictionaries are matched greedily: cosines are computed in blocks of
    ``block`` rows, each row keeps its ``n_candidates`` best columns, and pairs
    are taken in order of decreasing cosine when both ends are free (a
    1/2-approximation of the maximum-weight matching; a dictionary's true match
    is usually its best candidate: on a noisy permuted copy it finds the exact
    matching, on two random dictionaries a mean cosine within 2% of it). The
    rows and columns left over go round again, and once they fit in
    ``max_dense`` the rest is solved exactly. ``method`` says which path was taken.

    Args:
        W_a: ``[d_sae_a, d_in]`` decoder rows of SAE A (array or tensor).
        W_b: ``[d_sae_b, d_in]`` decoder rows of SAE B.
    """
    A, B = _directions(W_a, "W_a"), _directions(W_b, "W_b")
    if A.shape[1] != B.shape[1]:
        raise ShapeError(
            f"The decoders read different widths: W_a {A.shape}, W_b {B.shape}; "
            "match SAEs trained on the same units."
        )
    rows_left, cols_left = np.arange(A.shape[0]), np.arange(B.shape[0])
    found, method = [], "hungarian"
    while rows_left.size and cols_left.size:
        if rows_left.size * cols_left.size <= max_dense:
            r, c = linear_sum_assignment(A[rows_left] @ B[cols_left].T, maximize=True)
            found.append(np.stack([rows_left[r], cols_left[c]], axis=1))
            break
        method = "greedy+hungarian"
        pairs = _greedy_round(A[rows_left], B[cols_left], block, n_candidates)
        found.append(np.stack([rows_left[pairs[:, 0]], cols_left[pairs[:, 1]]], axis=1))
        rows_left = np.setdiff1d(rows_left, found[-1][:, 0])
        cols_left = np.setdiff1d(cols_left, found[-1][:, 1])
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    pairs = pairs[np.argsort(pairs[:, 0])].astype(np.int64)
    cosine = np.full(A.shape[0], np.nan)
    cosine[pairs[:, 0]] = np.einsum("ij,ij->i", A[pairs[:, 0]], B[pairs[:, 1]])
    return FeatureMatch(pairs=pairs, cosine=cosine, method=method)


def _directions(W, name: str) -> np.ndarray:
    """``W`` ``[d_sae, d_in]`` as float32 unit rows."""
    W = W.detach().cpu().numpy() if hasattr(W, "detach") else np.asarray(W)
    if W.ndim != 2:
        raise ShapeError(f"`{name}` must be 2-D [d_sae, d_in], got shape {W.shape}.")
    return unit_rows(W.astype(np.float32))


def _greedy_round(A: np.ndarray, B: np.ndarray, block: int, n_candidates: int) -> np.ndarray:
    """``[n, 2]`` pairs taken greedily from each row's best ``n_candidates`` columns
    (at least one: the largest candidate cosine is always free)."""
    t = min(n_candidates, B.shape[0])
    rows, cols, vals = [], [], []
    for s in range(0, A.shape[0], block):
        C = A[s : s + block] @ B.T
        top = np.argpartition(-C, t - 1, axis=1)[:, :t]
        rows.append(np.repeat(np.arange(s, s + C.shape[0]), t))
        cols.append(top.ravel())
        vals.append(np.take_along_axis(C, top, axis=1).ravel())
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    row_free, col_free = np.ones(A.shape[0], bool), np.ones(B.shape[0], bool)
    taken = []
    for i in np.argsort(-vals, kind="stable"):
        r, c = rows[i], cols[i]
        if row_free[r] and col_free[c]:
            row_free[r] = col_free[c] = False
            taken.append((r, c))
    return np.asarray(taken, dtype=np.int64).reshape(-1, 2)
