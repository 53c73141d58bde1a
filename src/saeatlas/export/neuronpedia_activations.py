"""What each feature does on the store's rows, for the Neuronpedia export: two
passes that encode every row (firings, maxima, top rows and co-firing; then the
activation histograms) and the token contexts of the top activations."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ..sae import SparseAutoencoder
from ..store import ActivationStore
from .neuronpedia_schema import rounded


def encode(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """``[rows, d_sae]`` float32 activations of ``x`` ``[rows, d_in]``, on the CPU."""
    with torch.no_grad():
        return sae.encode(x.to(sae.W_enc)).acts.float().cpu()


#: Most values of one block of the features' Gram matrix (32 MB in float64): the whole
#: ``[d_sae, d_sae]`` matrix is 17 GB in float32 at 65,536 latents.
GRAM_BLOCK = 1 << 22


class FeatureStats:
    """Pass-one statistics of every feature: firings, maxima, top rows, and the rows'
    codes (sparse: only the non-zero activations) for its correlated features."""

    def __init__(self, d_sae: int, n_top: int) -> None:
        self.n_rows, self.d_sae = 0, d_sae
        self.fired = torch.zeros(d_sae, dtype=torch.float64)
        self.max = torch.zeros(d_sae)
        self.top_values = torch.full((n_top, d_sae), -1.0)
        self.top_rows = torch.full((n_top, d_sae), -1, dtype=torch.long)
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.codes: list[sp.csr_matrix] = []

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
        self.codes.append(sp.csr_matrix(acts.numpy()))
        self.n_rows += n

    def correlated(
        self, module: torch.Tensor, n: int, block: int = GRAM_BLOCK
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per feature, the ``n`` features most correlated with it (Pearson correlation
        of activations over the rows; 0 with a feature that never varies) among the
        other features of its module (``module`` ``[d_sae]``, -1 for none), or among
        all features when it has no company there; and those correlations. The Gram
        matrix is computed one block of rows of at most ``block`` values at a time."""
        d = self.d_sae
        codes = sp.vstack(self.codes, format="csr") if self.codes else sp.csr_matrix((0, d))
        codes = codes.astype(np.float64)
        by_feature = codes.tocsc()
        rows = max(self.n_rows, 1)
        mean = self.sum.numpy() / rows
        sq = np.asarray(codes.multiply(codes).sum(axis=0)).ravel() / rows
        std = np.sqrt(np.clip(sq - mean**2, 0, None))
        module = module.numpy()
        out = []
        step = max(1, block // max(d, 1))
        for start in range(0, d, step):
            stop = min(start + step, d)
            cov = (by_feature[:, start:stop].T @ codes).toarray() / rows
            cov -= mean[start:stop, None] * mean[None, :]
            denom = std[start:stop, None] * std[None, :]
            corr = np.where(denom > 0, cov / np.maximum(denom, 1e-300), 0.0)
            for i, f in enumerate(range(start, stop)):
                same = np.flatnonzero(module == module[f]) if module[f] >= 0 else None
                if same is None or same.size < 2:  # no company: every other feature
                    row = corr[i].copy()
                    row[f] = -np.inf
                    top = _top(row, n + 1)
                    top = top[top != f][:n]
                else:
                    same = same[same != f]
                    top = same[_top(corr[i, same], n)]
                out.append((top, corr[i, top]))
        return out


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest ``values``, largest first, ties by position (as a
    stable sort of all of them would give), without sorting all of them."""
    if values.size > n:
        kth = np.partition(values, values.size - n)[values.size - n]
        candidates = np.flatnonzero(values >= kth)
    else:
        candidates = np.arange(values.size)
    return candidates[np.argsort(-values[candidates], kind="stable")][:n]


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
