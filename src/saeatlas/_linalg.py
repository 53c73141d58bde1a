"""Small linear-algebra helpers shared by training and the atlas (numpy or torch)."""

from __future__ import annotations

import numpy as np
import torch


def row_norms(x):
    """``[n, 1]`` L2 norm of each row of ``x`` ``[n, d]`` (numpy array or torch tensor),
    with 1 in place of 0, so that dividing by it leaves all-zero rows zero."""
    if isinstance(x, torch.Tensor):
        n = x.norm(dim=1, keepdim=True)
        return torch.where(n > 0, n, torch.ones_like(n))
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, n, 1.0)


def unit_rows(x):
    """``x`` ``[n, d]`` with every row scaled to unit L2 norm; all-zero rows stay zero."""
    return x / row_norms(x)
