"""What a module finder's ``fit`` checks before it partitions: the graph (a square
non-negative adjacency, made symmetric) and the finder's hyperparameters, which
scikit-learn's convention checks in ``fit``, not in ``__init__``."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..._validation import shown
from ...errors import ConfigError
from ...store.requests import whole_number


def check_graph(X: Any) -> sp.csr_matrix:
    """``X`` as a symmetric float64 CSR graph with no self-loops or stored zeros: the
    larger of ``X[i, j]`` and ``X[j, i]`` on both sides, the diagonal dropped.

    A graph that is one already (a :class:`.edges.FeatureGraph`'s adjacency) is not
    copied: its arrays are shared, so the finders of every scale fitted on one graph
    hold one graph between them (at 65,536 latents x 1M rows each copy was 0.1 GB)."""
    if not sp.issparse(X) and np.ndim(X) != 2:  # a number (or None) was a graph of one node
        raise ValueError(
            f"The graph must be a square matrix (an adjacency [n, n], dense or scipy.sparse), "
            f"got {type(X).__name__} of {np.ndim(X)} dimensions."
        )
    A = sp.csr_matrix(X, dtype=np.float64)  # shares a float64 CSR's arrays
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"The graph must be square, got shape {A.shape}.")
    # NaN/Inf weights passed (min() < 0 is false for NaN), and every node was in no module
    if A.nnz and not (np.isfinite(A.data).all() and A.data.min() >= 0):
        raise ValueError("The graph has negative, NaN or Inf weights; keep finite positive ones.")
    if (A != A.T).nnz:
        A = A.maximum(A.T)  # symmetric
    if A.diagonal().any() or not A.data.all():  # edited on a copy, never on X's arrays
        A = A.copy()
        A.setdiag(0)
        A.eliminate_zeros()
    return A


def check_finder_params(finder: Any) -> None:
    """Refuse hyperparameters that partition nothing or something else without a word:
    ``resolutions=()`` (every node in no module), a resolution of -1 or 0, ``min_size``
    below 1, ``max_modules`` 0 (one module); "2" and 2.5 ended in NumPy's TypeErrors."""
    whole_number("min_size", finder.min_size, low=1)
    if finder.random_state is not None:
        whole_number("random_state", finder.random_state, high=2**32 - 1)
    if hasattr(finder, "resolutions"):
        r = finder.resolutions
        ok = (
            isinstance(r, (list, tuple))
            and r
            and all(
                isinstance(v, Real)
                and not isinstance(v, (bool, np.bool_))
                and math.isfinite(v)
                and v > 0
                for v in r
            )
        )
        if not ok:
            raise ConfigError(
                f"`resolutions` must be a non-empty list of finite numbers above 0, got {shown(r)}."
            )
    if hasattr(finder, "max_modules"):
        whole_number("max_modules", finder.max_modules, low=1)
