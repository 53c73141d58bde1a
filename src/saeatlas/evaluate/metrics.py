"""Reconstruction and sparsity metrics of an SAE on a store, streamed in batches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from .._coordinator import Coordinator, run_ranks
from .._validation import check_device, in_range, shown
from .._world import rank_device
from ..errors import ConfigError, NonFiniteError
from ..sae import SparseAutoencoder
from ..sae.model import check_loaded_sae, sae_fingerprint, sae_layers
from ..store import ActivationStore
from ..store.requests import whole_number
from ..store.stats import RunningMoments
from ..train.init import unit_varies

#: A latent firing on more than this fraction of rows counts as dense.
DENSE_FRACTION = 0.1
#: Fewest rows an FVU is measured on (held out by a sweep, or given to evaluate).
MIN_HELDOUT_ROWS = 4
#: Most bins of a density histogram (as the Neuronpedia export's histograms).
MAX_BINS = 1000


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one SAE on a set of rows."""

    n_rows: int
    fvu: float
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean||^2."""
    explained_variance: float
    """1 - fvu."""
    mse: float
    """Mean over rows of ||x - x_hat||^2."""
    l0: float
    """Mean number of active latents per row."""
    dead_fraction: float
    """Latents that never fired on these rows."""
    dense_fraction: float
    """Latents that fired on more than 10% of rows."""
    density: np.ndarray
    """``[d_sae]`` fraction of rows on which each latent fired."""

    def density_histogram(self, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of log10 firing density over latents that fired, in ``bins``
        bins (1 to :data:`MAX_BINS`: 0 or 2.5 ended in NumPy's errors, True was read as 1,
        and 10**9 asked for gigabytes of bins)."""
        whole_number("bins", bins, low=1)
        in_range("bins", bins, 1, MAX_BINS)
        alive = self.density[self.density > 0]
        if alive.size == 0:
            return np.zeros(bins, dtype=np.int64), np.linspace(-8, 0, bins + 1)
        return np.histogram(
            np.log10(alive), bins=bins, range=(min(-8.0, float(np.log10(alive.min()))), 0.0)
        )

    def as_dict(self) -> dict[str, float]:
        return {
            k: getattr(self, k)
            for k in (
                "n_rows",
                "fvu",
                "explained_variance",
                "mse",
                "l0",
                "dead_fraction",
                "dense_fraction",
            )
        }


@torch.no_grad()
def evaluate_sae(
    sae: SparseAutoencoder,
    store: ActivationStore | str | Path,
    *,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
    timeout_s: float = 1800.0,
) -> EvalResult:
    """Metrics of ``sae`` on rows ``start:stop`` of ``store`` (all by default; an opened
    store, or the path of a store directory or a ``.npy``, as ``train_sae`` takes).

    Rows are the store's as every stage counts them: of a ``.npy`` opened with
    ``on_nonfinite='skip'``, those left after its NaN/Inf rows were left out (as
    ``heldout_rows`` counts them); the ``sample`` column of ``store.rows()`` gives
    each row's index in the file.

    The SAE must read the store's columns: its ``cfg.layers`` name the store
    layers it was trained on.

    Under ``torchrun`` (or an initialised process group) every rank calls this alike:
    each encodes its own contiguous share of the batches (``device="cuda"``: its own
    GPU), the sums are gathered, and every rank returns the metrics one process
    computes (to float rounding: the sums are added in another order). ``timeout_s``:
    seconds a rank waits for the others where they meet.
    """
    check_loaded_sae(sae)
    # "0" and 1.5 ended in a TypeError, and True was read as row 1
    for name, value in (("start", start), ("stop", stop), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
            raise ConfigError(
                f"--{name.replace('_', '-')} (`{name}`) must be a whole number of rows, got "
                f"{shown(value)}."
            )
    store = store if isinstance(store, ActivationStore) else ActivationStore.open(store)
    layers = [l.name for l in sae_layers(sae, store)]
    n_rows = store.n_rows
    # a range past the store is refused, not cut to it: the metrics would be of other
    # rows than the ones asked for (--stop 1000 of a 300-row store measured rows 0:300)
    skipped = store.n_skipped_rows
    left = (
        f" (the {n_rows + skipped:,} rows of the file less the {skipped:,} with NaN/Inf that "
        "--on-nonfinite skip left out: rows are counted without them)"
        if skipped
        else ""
    )
    for flag, value in (("start", start), ("stop", stop)):
        if value is not None and not 0 <= value <= n_rows:
            raise ConfigError(
                f"--{flag} (`{flag}`) {value} is outside the store's {n_rows:,} rows{left}; "
                f"give a row from 0 to {n_rows:,}"
                + (" (or leave --stop out for all rows)." if flag == "stop" else ".")
            )
    stop = n_rows if stop is None else stop
    if not start < stop:
        raise ConfigError(
            f"No rows in {start}:{stop} to evaluate on: give --start (`start`) below --stop "
            f"(`stop`); the store has {n_rows:,} rows."
        )
    if stop - start < MIN_HELDOUT_ROWS:
        raise ConfigError(
            f"Rows {start}:{stop} are {stop - start}, fewer than the {MIN_HELDOUT_ROWS} needed "
            "to measure the FVU (it divides by their variance). Evaluate on more rows."
        )
    in_range("batch_size", batch_size, 0, open_low=True, flag="--batch-size")
    check_device("device", str(device), flag="--device")
    batches = range(start, stop, batch_size)

    def on_ranks(coord: Coordinator) -> tuple[int, float, float, np.ndarray, RunningMoments]:
        """This rank's share of the batches (contiguous, in rank order), summed over
        the ranks; every rank gets the sums one process makes."""
        if coord.distributed:  # a rank given other rows or another SAE was summed in
            coord.agree(
                {
                    "--start": start,
                    "--stop": stop,
                    "--batch-size": batch_size,
                    "--sae": sae_fingerprint(sae, metadata=False),
                    "--acts": store.digest(),
                },
                "this evaluation",
                "Every rank must evaluate the same SAE on the same rows: give every rank the "
                "same command line.",
            )
        here = rank_device(str(device), coord.world) or str(device)
        model = sae.to(here).eval()
        lo, hi = coord.share(len(batches))
        fired = torch.zeros(model.cfg.d_sae, dtype=torch.float64, device=here)
        sq_err, n, active = 0.0, 0, 0.0
        # Chan et al.'s merge, as the store's statistics: sum(x^2) - sum(x)^2 / n
        # cancelled for a large mean and a small spread, and a floor on it took values
        # near 1e-30 for rows that do not vary
        moments = RunningMoments(model.cfg.d_in)
        for s in batches[lo:hi]:
            x = store.read(s, min(stop, s + batch_size), layers=layers).to(here)
            out = model(x)
            sq_err += float((x - out.x_hat).double().pow(2).sum())
            moments.update(x)
            on = out.acts != 0
            fired += on.sum(dim=0).double()
            active += float(on.sum())
            n += x.shape[0]
        if not coord.distributed:
            return n, sq_err, active, fired.cpu().numpy(), moments
        parts = coord.gather((n, sq_err, active, fired.cpu().numpy(), moments.state()), None)
        total = RunningMoments(model.cfg.d_in)
        for _, _, _, _, state in parts:  # in rank order, as one process meets the rows
            part = RunningMoments.from_state(state)
            total.merge(part.count, part.mean, part.m2)
        return (
            sum(p[0] for p in parts),
            sum(p[1] for p in parts),
            sum(p[2] for p in parts),
            np.sum([p[3] for p in parts], axis=0),
            total,
        )

    n, sq_err, active, fired, moments = run_ranks("evaluation", str(device), timeout_s, on_ranks)
    # sum ||x - mean||^2 over the units that vary, each judged by its own mean and spread
    # as training judges them: judged against the whole row's sum of squares, one unit
    # held at 1e20 made every other unit's variance look like rounding
    varies = unit_varies(moments.mean, np.sqrt(moments.m2 / n))
    total = float(moments.m2[varies].sum())
    if not total > 0:
        raise ConfigError(
            f"Rows {start}:{stop} do not vary (every row is the same), so the FVU is "
            "undefined. Evaluate on other rows."
        )
    if not math.isfinite(sq_err):
        raise NonFiniteError(
            "The SAE's reconstruction of these rows has NaN/Inf values: its weights are broken "
            "or the activations are far outside what it was trained on. Retrain it."
        )
    fvu_value = sq_err / total
    density = fired / n
    return EvalResult(
        n_rows=n,
        fvu=fvu_value,
        explained_variance=1 - fvu_value,
        mse=sq_err / n,
        l0=active / n,
        dead_fraction=float((density == 0).mean()),
        dense_fraction=float((density > DENSE_FRACTION).mean()),
        density=density,
    )
