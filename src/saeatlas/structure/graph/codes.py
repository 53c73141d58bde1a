"""Encode a store with an SAE into sparse codes, with the statistics the atlas needs.

One pass over the store gives, without ever holding a dense ``[rows, d_sae]``
matrix:

- ``matrix``: the codes as a CSR matrix ``[n_rows, d_sae]`` (float32; about L0
  entries per row, so 1M rows at L0 32 take ~256 MB);
- per-unit moments (mean, std) and per-feature moments (firing count, sum and
  sum of squares of the activation);
- ``cross``: ``sum_rows f_i * x_u`` ``[d_sae, n_units]``, from which every
  feature's correlation with every single unit follows (Templeton et al. 2024
  report how many features correlate at most 0.3 with their best unit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch

from ..._coordinator import Coordinator, solo
from ..._progress import progress_bar
from ...sae import SparseAutoencoder
from ...sae.model import check_loaded_sae, sae_layers
from ...store import ActivationStore, LayerSpec
from .encoder import SparseEncoder
from .moments import make_sums, std_from_moments


@dataclass(frozen=True)
class Codes:
    """An SAE's codes over (part of) a store, and their moments."""

    matrix: sp.csr_matrix
    """``[n_rows, d_sae]`` latent activations (float32), zero where a latent is off."""
    rows: np.ndarray
    """``[n_rows]`` the store row of each code row."""
    samples: np.ndarray
    """``[n_rows]`` the sample (input) each row came from (tokens of one text share one)."""
    layers: tuple[LayerSpec, ...]
    """The units the SAE reads, as column ranges of its input."""
    unit_mean: np.ndarray
    """``[n_units]`` mean of each unit over the encoded rows."""
    unit_std: np.ndarray
    """``[n_units]`` standard deviation of each unit over the encoded rows."""
    act_sum: np.ndarray
    """``[d_sae]`` sum of each feature's activation."""
    act_sq_sum: np.ndarray
    """``[d_sae]`` sum of each feature's squared activation."""
    cross: np.ndarray
    """``[d_sae, n_units]`` ``sum_rows f_i x_u`` (float64)."""
    unit_gram: np.ndarray | None = None
    """``[n_units, n_units]`` ``sum_rows x x^T`` (float64), when asked for."""
    residual_sq: np.ndarray | None = None
    """``[n_units]`` sum over rows of the squared reconstruction error per unit."""
    resampled_grams: tuple[tuple[float, np.ndarray, np.ndarray], ...] = ()
    """Poisson-bootstrap resamples of the unit moments, when asked for: per resample
    ``(sum w, sum w x [n_units], sum w x x^T [n_units, n_units])``."""
    n_distinct_rows: int | None = None
    """Rows whose units differ from every other encoded row's (:func:`row_hashes`)."""

    @property
    def n_rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def d_sae(self) -> int:
        return self.matrix.shape[1]

    @property
    def n_fire(self) -> np.ndarray:
        """``[d_sae]`` rows on which each feature is active."""
        return np.bincount(self.matrix.indices, minlength=self.d_sae)

    def window_applied(self, window: int) -> bool:
        """Whether co-occurrence counted over ``window`` rows differs from per row: windows
        never cross samples, so with one row per sample (a .npy store) a window is a row."""
        return window > 0 and np.unique(self.samples).size < self.samples.size

    @property
    def density(self) -> np.ndarray:
        """``[d_sae]`` fraction of rows on which each feature is active."""
        return self.n_fire / max(self.n_rows, 1)

    def unit_correlation(self, features: slice = slice(None)) -> np.ndarray:
        """``[d_sae, n_units]`` Pearson correlation of each feature (of ``features``)
        with each unit."""
        n = max(self.n_rows, 1)
        f_mean = self.act_sum[features] / n
        f_std = std_from_moments(self.act_sq_sum[features] / n, f_mean)
        cov = self.cross[features] / n - f_mean[:, None] * self.unit_mean[None, :]
        denom = f_std[:, None] * self.unit_std[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(denom > 0, cov / denom, 0.0)
        return np.clip(corr, -1.0, 1.0)


def encode_store(
    sae: SparseAutoencoder,
    store: ActivationStore,
    *,
    max_rows: int | None = None,
    batch_size: int = 4096,
    device: str = "cpu",
    unit_gram: bool = True,
    resamples: int = 0,
    resample_seed: int = 0,
    progress: bool = False,
    coord: Coordinator | None = None,
    engine: str = "auto",
) -> Codes:
    """Encode ``store`` (at most ``max_rows`` rows, taken as evenly spaced runs of
    whole batches so that consecutive tokens stay together, the last run cut to
    make ``max_rows``) into :class:`Codes`.

    ``resamples``: also accumulate that many bootstrap resamples of the unit moments
    in the same pass (the Poisson bootstrap, Hanley & MacGibbon 2006: every sample
    gets a Poisson(1) weight, shared by all its rows so that the rows of one text
    stay together; seeded by ``resample_seed``).

    Under ``torchrun`` (``coord`` of several ranks) each rank encodes a contiguous
    share of the batches (the expensive ``x @ W_enc`` and top-k, reading only its
    own shards); the moments are sums, reduced over the ranks, and the sparse codes
    (about L0 entries a row) are gathered in rank order, so every rank holds the
    codes one process holds, row for row and bit for bit. Only the moments' last
    bits can differ from one process's (floating-point sums taken in another order).

    ``engine``: who sums the moments (:mod:`.moments`): ``"auto"`` (numpy on the CPU,
    torch on the encoding device otherwise), ``"numpy"`` or ``"torch"``.
    """
    check_loaded_sae(sae)  # a path ended in an AttributeError
    if not isinstance(store, ActivationStore):  # its path, as every other stage takes
        store = ActivationStore.open(store)
    coord = coord if coord is not None else solo()
    layers = sae_layers(sae, store)
    names = [l.name for l in layers]
    sae = sae.to(device).eval()
    lo, hi = coord.share(len(_batches_to_encode(store.n_rows, batch_size, max_rows)))
    sample_col = np.asarray(store.rows(["sample"]).column("sample").to_numpy())
    sample_idx = np.unique(sample_col, return_inverse=True)[1].reshape(-1)
    n_samples = int(sample_idx.max(initial=-1)) + 1
    weights = np.random.default_rng(resample_seed).poisson(1.0, (resamples, n_samples))
    sums = make_sums(sae, unit_gram, resamples, torch.device(device), engine)
    encoder = SparseEncoder.of(sae)
    per_row, indices, data, rows, hashes = [], [], [], [], []  # this rank's, batch by batch
    with progress_bar("encode", hi - lo, progress) as bar:
        for start, _, x in atlas_batches(store, names, batch_size, max_rows, coord):
            hashes.append(row_hashes(x))
            x = x.to(device, torch.float32)
            idx_d, vals_d = encoder(x)
            idx, vals = idx_d.cpu().numpy(), vals_d.cpu().numpy()
            f = sp.csr_matrix((vals, (idx[:, 0], idx[:, 1])), shape=(x.shape[0], sae.cfg.d_sae))
            f.sum_duplicates()
            w = weights[:, sample_idx[start : start + x.shape[0]]] if resamples else None
            sums.add(x, idx_d, vals_d, f, w)
            per_row.append(np.diff(f.indptr).astype(np.int64))  # entries in each row
            indices.append(f.indices.astype(np.int32))
            data.append(f.data.astype(np.float32))
            rows.append(np.arange(start, start + x.shape[0]))
            bar.advance(1)
    counts, cols, values, row_ids, hashed = coord.concat(
        [
            _cat(per_row, np.int64),
            _cat(indices, np.int32),
            _cat(data, np.float32),
            _cat(rows, np.int64),
            _cat(hashes, np.int64),
        ]
    )
    matrix = sp.csr_matrix(
        (values, cols, np.concatenate([[0], np.cumsum(counts)])),
        shape=(len(row_ids), sae.cfg.d_sae),
    )
    codes = _codes(sums.totals(), coord, matrix, row_ids, sample_col, layers)
    return replace(codes, n_distinct_rows=int(np.unique(hashed).size))


def row_hashes(x: torch.Tensor) -> np.ndarray:
    """``[rows]`` a 64-bit hash (int64) of each row's bytes: rows repeated exactly share one (a
    store holding the same inputs many times counts each copy as evidence)."""
    a = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    a = np.pad(a, ((0, 0), (0, a.shape[1] % 2))).view(np.uint64)
    with np.errstate(over="ignore"):
        a = a * _MIX[np.arange(a.shape[1]) % _MIX.size]  # each 8 bytes by its place
        a ^= a >> np.uint64(32)
        # as int64: torch gathers no uint64 over the ranks ("Invalid scalar type")
        return (a * _MIX[0]).sum(axis=1, dtype=np.uint64).view(np.int64)


#: Odd multipliers of :func:`row_hashes`, one per place of 8 bytes in a row (cycled).
_MIX = np.random.default_rng(0).integers(1, 2**63, 4096, dtype=np.uint64) | np.uint64(1)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def atlas_batches(
    store: ActivationStore,
    names: Sequence[str],
    batch_size: int,
    max_rows: int | None,
    coord: Coordinator | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """This rank's share of the rows :func:`encode_store` encodes (all of them in a world
    of one), batch by batch: ``(store row, code row, x)`` with the store row and the
    position among the codes' rows of the batch's first row, and ``x``
    ``[rows, n_units]`` the units ``names`` of its rows. Rank ``r`` reads the ``r``-th
    contiguous share of the batches (:meth:`Coordinator.share`)."""
    coord = coord if coord is not None else solo()
    plan = _batches_to_encode(store.n_rows, batch_size, max_rows)
    lo, hi = coord.share(len(plan))
    position = sum(n for _, n in plan[:lo])
    for (b, n), x in zip(plan[lo:hi], _read(store, list(names), batch_size, plan[lo:hi])):
        yield b * batch_size, position, x[:n]
        position += n


def _batches_to_encode(
    n_total: int, batch_size: int, max_rows: int | None
) -> list[tuple[int, int]]:
    """``[(batch, rows taken from it)]`` in storage order: every batch, or with
    ``max_rows`` evenly spaced full batches, the last one cut to make ``max_rows``."""
    n_batches = -(-n_total // batch_size)
    sizes = [min(batch_size, n_total - b * batch_size) for b in range(n_batches)]
    if max_rows is None or max_rows >= n_total:
        return list(zip(range(n_batches), sizes))
    # full batches only (the store's last one may be short), as many as make max_rows
    n_full = n_total // batch_size
    n_keep = -(-max_rows // batch_size)
    if n_keep <= n_full:
        keep = sorted(set(np.linspace(0, n_full - 1, n_keep).round().astype(int).tolist()))
    else:
        keep = list(range(n_batches))
    plan, left = [], max_rows
    for b in keep:
        if left <= 0:
            break
        plan.append((b, min(sizes[b], left)))
        left -= plan[-1][1]
    return plan


def _read(
    store: ActivationStore, names: list[str], batch_size: int, plan: list[tuple[int, int]]
) -> Iterator[torch.Tensor]:
    """The batches of ``plan`` (in storage order), reading from the first one's shard on."""
    if not plan:
        return
    wanted = {b for b, _ in plan}
    batches = store.iter_batches(
        batch_size,
        shuffle=False,
        layers=names,
        start_batch=plan[0][0],
        stop_row=(plan[-1][0] + 1) * batch_size,
    )
    for b, x in enumerate(batches, start=plan[0][0]):
        if b in wanted:
            yield x


def _codes(
    totals: dict[str, np.ndarray],
    coord: Coordinator,
    matrix: sp.csr_matrix,
    row_ids: np.ndarray,
    sample_col: np.ndarray,
    layers: Sequence[LayerSpec],
) -> Codes:
    """The :class:`Codes` of all ranks' rows: this rank's moments ``totals``
    (:meth:`.moments.Sums.totals`) reduced over the ranks."""
    names = list(totals)
    total = dict(zip(names, coord.sum_arrays([totals[k] for k in names])))
    n = max(matrix.shape[0], 1)
    mean = total["unit_sum"] / n
    std = std_from_moments(total["unit_sq"] / n, mean)
    rebased, start = [], 0
    for l in layers:
        rebased.append(LayerSpec(l.name, start, start + l.n_units, l.shape, l.layout))
        start += l.n_units
    n_resamples = total["r_w"].shape[0]
    return Codes(
        matrix=matrix,
        rows=row_ids,
        samples=sample_col[row_ids] if len(row_ids) else row_ids,
        layers=tuple(rebased),
        unit_mean=mean,
        unit_std=std,
        act_sum=total["act_sum"],
        act_sq_sum=total["act_sq"],
        cross=total["cross"],
        unit_gram=total.get("gram"),
        residual_sq=total["residual"],
        resampled_grams=tuple(
            (float(total["r_w"][i]), total["r_sum"][i], total["r_gram"][i])
            for i in range(n_resamples)
        ),
    )


def weighted_sq_sum(matrix: sp.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """``[d_sae]`` float64 ``sum_r weights[r] * matrix[r, i] ** 2``: the feature moment of
    a resample of the rows (``weights``: how often each row was drawn) without copying
    the drawn rows; one block of rows' float64 squares at a time."""
    n, d = matrix.shape
    out = np.zeros(d, dtype=np.float64)
    for s in range(0, n, WEIGHTED_ROWS):
        lo, hi = matrix.indptr[s], matrix.indptr[min(n, s + WEIGHTED_ROWS)]
        w = np.repeat(
            weights[s : s + WEIGHTED_ROWS], np.diff(matrix.indptr[s : s + WEIGHTED_ROWS + 1])
        )
        sq = matrix.data[lo:hi].astype(np.float64) ** 2
        out += np.bincount(matrix.indices[lo:hi], weights=sq * w, minlength=d)
    return out


#: Rows per block of :func:`weighted_sq_sum`.
WEIGHTED_ROWS = 1 << 16


def strong_firing(matrix: sp.csr_matrix, min_activation: float) -> sp.csr_matrix:
    """Codes with each feature's weak activations dropped: an entry stays when it is at
    least ``min_activation`` times the feature's 99th-percentile activation.

    TopK SAEs must fill k slots on every row: on quiet rows they fill them with
    tiny activations of unrelated latents, which then "co-fire" on exactly those
    rows (ReLU SAEs leave similar small residue). Such firings carry little of
    the reconstruction and would bind unrelated latents into a false module.
    """
    if min_activation <= 0:
        return matrix
    csc = sp.csc_matrix(matrix)
    cut = min_activation * column_percentile(csc, 99)
    keep = csc.data >= np.repeat(cut, np.diff(csc.indptr))
    out = sp.csc_matrix((csc.data * keep, csc.indices, csc.indptr), shape=csc.shape).tocsr()
    out.eliminate_zeros()
    return out


def column_percentile(csc: sp.csc_matrix, q: float) -> np.ndarray:
    """``[n_cols]`` ``np.percentile`` of each column's stored values (0 for a column
    with none), in the stored dtype. Columns with the same number of values go to
    numpy together as the rows of one 2-D array (the same computation, value for
    value, as one call per column, without a Python step per column: a 262k-latent
    SAE has as many)."""
    counts = np.diff(csc.indptr)
    out = np.zeros(csc.shape[1], dtype=csc.data.dtype)
    by_count = np.argsort(counts, kind="stable")
    bounds = np.flatnonzero(np.diff(counts[by_count], prepend=-1, append=-1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cols = by_count[lo:hi]
        m = int(counts[cols[0]])
        if m:
            values = csc.data[csc.indptr[cols][:, None] + np.arange(m)]
            out[cols] = np.percentile(values, q, axis=1)
    return out
