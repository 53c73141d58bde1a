"""What each feature does on the store's rows, for the Neuronpedia export: two
passes that encode every row (firings, maxima, top rows and co-firing; then the
activation histograms) and the token contexts of the top activations."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..sae import SparseAutoencoder
from ..store import ActivationStore
from .neuronpedia_schema import rounded


def encode(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """``[rows, d_sae]`` float32 activations of ``x`` ``[rows, d_in]``, on the CPU."""
    with torch.no_grad():
        return sae.encode(x.to(sae.W_enc)).acts.float().cpu()


class FeatureStats:
    """Pass-one statistics of every feature: firings, maxima, top rows, co-firing."""

    def __init__(self, d_sae: int, n_top: int) -> None:
        self.n_rows = 0
        self.fired = torch.zeros(d_sae, dtype=torch.float64)
        self.max = torch.zeros(d_sae)
        self.top_values = torch.full((n_top, d_sae), -1.0)
        self.top_rows = torch.full((n_top, d_sae), -1, dtype=torch.long)
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.gram = torch.zeros(d_sae, d_sae)

    def add(self, acts: torch.Tensor, first_row: int) -> None:
        n = acts.shape[0]
        rows = torch.arange(first_row, first_row + n).unsqueeze(1).expand(n, acts.shape[1])
        values = torch.cat([self.top_values, acts])
        keep = values.topk(self.top_values.shape[0], dim=0)
        self.top_values = keep.values
        self.top_rows = torch.cat([self.top_rows, rows]).gather(0, keep.indices)
        self.fired += (acts > 0).sum(0)
        self.max = torch.maximum(self.max, acts.max(0).values)
        self.sum += acts.sum(0, dtype=torch.float64)
        self.gram += acts.T @ acts
        self.n_rows += n

    def pearson(self) -> torch.Tensor:
        """``[d_sae, d_sae]`` correlation of the features' activations (0 for dead ones)."""
        n = max(self.n_rows, 1)
        mean = (self.sum / n).float()
        cov = self.gram / n - mean[:, None] * mean[None, :]
        std = cov.diagonal().clamp_min(0).sqrt()
        denom = std[:, None] * std[None, :]
        return torch.where(denom > 0, cov / denom.clamp_min(1e-30), torch.zeros_like(cov))


def histograms(
    sae: SparseAutoencoder,
    store: ActivationStore,
    layers: Any,
    max_: torch.Tensor,
    n_bins: int,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Pass two: per feature, counts of its non-zero activations in ``n_bins`` equal bins
    over ``(0, max]``, and the bins' centres."""
    d_sae, bins = max_.shape[0], n_bins
    counts = torch.zeros(d_sae * bins, dtype=torch.float64)
    width = (max_ / bins).clamp_min(1e-12)
    for x in store.iter_batches(batch_size, shuffle=False, layers=layers):
        acts = encode(sae, x)
        rows, feats = torch.nonzero(acts > 0, as_tuple=True)
        b = (acts[rows, feats] / width[feats]).long().clamp(0, bins - 1)
        counts.index_add_(0, feats * bins + b, torch.ones(len(b), dtype=torch.float64))
    centres = (torch.arange(bins) + 0.5)[None, :] * width[:, None]
    return {"counts": counts.view(d_sae, bins), "centres": centres}


class Contexts:
    """The token contexts of top activations: the rows of the same sample around a row,
    with the feature's activation on each (encoded once per sample window)."""

    def __init__(self, sae, store, layers, meta, context: int) -> None:
        self.sae, self.store, self.layers, self.context = sae, store, layers, context
        self.sample = meta["sample"].to_numpy()
        self.position = meta["position"].to_numpy()
        if "token" in meta:
            self.labels = meta["token"].astype(str).to_numpy()
        elif "label" in meta:
            self.labels = np.array([f"label {v}" for v in meta["label"]])
        else:
            self.labels = np.array(
                [f"sample {s} pos {p}" for s, p in zip(self.sample, self.position)]
            )
        self.cache: dict[tuple[int, int], torch.Tensor] = {}

    def _window(self, row: int) -> tuple[int, int]:
        s = self.sample[row]
        lo, hi = row, row + 1
        while lo > 0 and row - lo < self.context and self.sample[lo - 1] == s:
            lo -= 1
        while hi < len(self.sample) and hi - row <= self.context and self.sample[hi] == s:
            hi += 1
        return lo, hi

    def examples(self, f: int, rows: torch.Tensor, values: torch.Tensor) -> list[dict[str, Any]]:
        out = []
        for row, value in zip(rows.tolist(), values.tolist()):
            if row < 0 or value <= 0:
                continue
            lo, hi = self._window(row)
            if (lo, hi) not in self.cache:
                x = self.store.read(lo, hi, layers=self.layers)
                self.cache[(lo, hi)] = encode(self.sae, x)
            acts = self.cache[(lo, hi)][:, f]
            out.append(
                {
                    "bin_min": -1,
                    "bin_max": round(float(value), 3),
                    "bin_contains": -1,
                    "tokens": [str(t) for t in self.labels[lo:hi]],
                    "values": rounded(acts),
                }
            )
        return out
