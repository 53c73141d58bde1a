"""The permutation null of the modules' label selectivity (:func:`.profiles.selectivity`).

Labels are permuted across the units that carry them. A label given per sample (a text's
topic, an image's class) is carried by all the sample's rows (its tokens, its positions),
whose activity is alike: permuted across rows, each row counted as independent evidence,
a module that fires in the tokens of 3 texts of one topic got p 0.0099 (1 in 101
permutations) where 3 texts drawn at random share a topic one time in 4. Where every
sample has one label the null permutes the samples' labels (class sizes then vary with
the samples' lengths and are recounted per permutation); otherwise it permutes the rows'.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Nonzeros per block of the permutation test's one-hot label matrix (bounds its memory).
_PERM_BLOCK_NNZ = 1 << 22


def permutation_null(
    activity: sp.csc_matrix,
    y: np.ndarray,
    n_classes: int,
    groups: np.ndarray | None,
    n_perm: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[n_perm, n_modules]`` selectivity indices of ``activity`` ``[n_rows, n_modules]``
    under permuted labels ``y`` ``[n_rows]``; ``groups`` ``[n_rows]``: the sample of each
    row (None: every row its own)."""
    from .profiles import selectivity_index

    draw = _sample_draw(y, groups)
    n = len(y)
    block = max(1, _PERM_BLOCK_NNZ // max(n, 1))
    out = []
    for start in range(0, n_perm, block):
        b = min(block, n_perm - start)
        drawn = [draw(rng) for _ in range(b)]
        cols = np.concatenate([p * n_classes + d for p, d in enumerate(drawn)])
        stacked = sp.csr_matrix(
            (np.ones(n * b), (np.tile(np.arange(n), b), cols)), shape=(n, b * n_classes)
        )
        sums = np.asarray((activity.T @ stacked).todense())  # [n_modules, b * n_classes]
        counts = np.stack([np.bincount(d, minlength=n_classes) for d in drawn])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums.reshape(-1, b, n_classes) / counts[None, :, :]
        for p in range(b):
            # a class no sample drew has no mean: that draw counts against the module
            index = selectivity_index(means[:, p, :])[0]
            out.append(np.where(np.isnan(index), np.inf, index) if counts[p].min() == 0 else index)
    return np.stack(out)


def _sample_draw(y: np.ndarray, groups: np.ndarray | None):
    """``draw(rng) -> [n_rows]`` one permutation of ``y``: of the samples' labels where
    ``groups`` holds samples of several rows, each of one label; else of the rows'."""
    if groups is not None and len(groups) == len(y) and len(y):
        _, idx = np.unique(groups, return_inverse=True)
        idx = idx.reshape(-1)
        n_groups = int(idx.max()) + 1
        first = np.full(n_groups, -1)
        first[idx[::-1]] = y[::-1]  # each sample's label (its first row's)
        if n_groups < len(y) and (first[idx] == y).all():
            return lambda rng: first[rng.permutation(n_groups)][idx]
    return lambda rng: rng.permutation(y)
