"""Windows of consecutive rows of one sample, the units the co-occurrence graph counts
when ``window > 0`` (:func:`.cooccurrence.count_cooccurrence`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def window_ids(samples: np.ndarray, window: int) -> np.ndarray:
    """``[n_rows]`` window index of each row: ``window`` consecutive rows of one sample.

    Windows restart at each sample; ids are consecutive from 0 in row order. The rows
    of a sample must be contiguous.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"`samples` must be 1-D (one id per row), got shape {samples.shape}.")
    if window < 1:
        raise ValueError(f"`window` must be positive, got {window}.")
    if samples.size == 0:
        return np.zeros(0, dtype=np.int64)
    new_run = np.empty(samples.size, dtype=bool)
    new_run[0] = True
    np.not_equal(samples[1:], samples[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    if np.unique(samples[starts]).size != starts.size:
        ids, n_runs = np.unique(samples[starts], return_counts=True)
        bad = ids[n_runs > 1][:5].tolist()
        raise ValueError(
            f"Rows of a sample must be contiguous, but samples {bad} appear in several runs; "
            "sort the rows by sample (keeping token order) first."
        )
    pos = np.arange(samples.size) - starts[np.cumsum(new_run) - 1]
    return np.cumsum(pos % window == 0) - 1


def pool_windows(fires: sp.csr_array, samples: np.ndarray | None, window: int) -> sp.csr_array:
    """``[n_rows, d]`` firing -> ``[n_windows, d]``: a latent fires in a window if on any row."""
    n = fires.shape[0]
    if samples is None:
        raise ValueError(
            f"`window`={window} counts windows within samples, so `samples` ([n_rows] sample "
            "id per row) is required; pass it, or use `window`=0 to count rows."
        )
    samples = np.asarray(samples)
    if samples.shape != (n,):
        raise ValueError(f"`samples` must have shape ({n},) (one id per row), got {samples.shape}.")
    ids = window_ids(samples, window)
    n_windows = int(ids[-1]) + 1 if n else 0
    # Windows are runs of consecutive rows, so each is a contiguous slice of the CSR arrays.
    first_row = np.flatnonzero(np.diff(ids, prepend=-1))
    indptr = np.append(fires.indptr[first_row], fires.indptr[-1])
    pooled = sp.csr_array(
        # bool data: duplicates merge by OR, so none can sum to an (erased) zero.
        (np.ones(fires.nnz, dtype=bool), fires.indices.copy(), indptr),
        shape=(n_windows, fires.shape[1]),
    )
    pooled.sum_duplicates()
    return pooled
