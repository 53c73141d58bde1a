"""How reproducible an SAE's dictionary is across seeds."""

from __future__ import annotations

import torch


def mean_max_cosine(w_a: torch.Tensor, w_b: torch.Tensor) -> float:
    """Mean over the rows of ``w_a`` ``[n, d]`` of the best cosine similarity with
    any row of ``w_b`` ``[m, d]``, averaged both ways (the decoder-similarity
    measure of Paulo & Belrose 2025, "Sparse autoencoders trained on the same
    data learn different features")."""
    a = torch.nn.functional.normalize(w_a.detach().float(), dim=1)
    b = torch.nn.functional.normalize(w_b.detach().float(), dim=1)
    sims = a @ b.T
    return float((sims.max(dim=1).values.mean() + sims.max(dim=0).values.mean()) / 2)
