"""Training of the small demo networks: seeded Adam on 4/5 of the rows, the rest held out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def fit_small(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 3e-3,
) -> np.ndarray:
    """Train ``model`` in place on a seeded 4/5 of the rows (``loss_fn(model, xb, yb)`` a
    scalar) and return the indices of the held-out fifth; the model ends in eval mode."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), batch_size):
            idx = perm[s : s + batch_size]
            loss = loss_fn(model, xt[idx], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return test
