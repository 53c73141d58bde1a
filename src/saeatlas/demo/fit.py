"""Training of the small demo networks: seeded Adam on 4/5 of the rows, the rest held out,
and iterative magnitude pruning."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..store.requests import whole_number


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
    # `digits_model(seed=1.5)` ended in NumPy's TypeError, `epochs="2"` in range()'s, and
    # `epochs=-1` gave the network as initialised without a word
    seed, epochs = whole_number("seed", seed), whole_number("epochs", epochs, low=1)
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


def prune_and_retrain(
    layers: Sequence[nn.Linear], keep: float, rounds: int, retrain: Callable[[], object]
) -> None:
    """Iterative magnitude pruning (Han et al. 2015; Frankle & Carbin 2019), in place.

    Each of ``rounds`` rounds zeroes the smallest surviving weights of every layer
    so that ``keep ** (r / rounds)`` of them remain after round ``r``, then calls
    ``retrain()`` with the pruned weights held at zero (their gradients are
    masked; ``fit_small`` starts a fresh Adam, whose steps are then exactly zero
    there). After the last round a fraction ``keep`` of each layer's weights is left.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"`keep` must be in (0, 1], got {keep}.")
    masks = [torch.ones_like(f.weight, dtype=torch.bool) for f in layers]
    for r in range(1, rounds + 1):
        fraction = keep ** (r / rounds)
        with torch.no_grad():
            for i, f in enumerate(layers):
                size = f.weight.abs().masked_fill(~masks[i], -1.0).flatten()
                n_keep = max(1, int(round(fraction * size.numel())))
                kept = torch.zeros_like(size, dtype=torch.bool)
                kept[size.topk(n_keep).indices] = True
                masks[i] = kept.view_as(f.weight) & masks[i]
                f.weight.mul_(masks[i])
        hooks = [f.weight.register_hook(lambda g, m=m: g * m) for f, m in zip(layers, masks)]
        try:
            retrain()
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            for f, m in zip(layers, masks):
                f.weight.mul_(m)
