"""Benchmark: the units' correlation view at thousands of units, every pair against neighbours.

The view (``structure.inference.correlation``) partitions the units' own
correlations, raw and cleaned (global mode and noise bulk removed), for every
member (all rows and the bootstrap resamples) and null draw (circular shifts).
Up to ``DENSE_UNITS`` units its graphs hold every positive pair and the cleaning
decomposes in float64; above, each unit keeps its ``UNIT_NEIGHBOURS`` strongest
pairs and the cleaning decomposes in float32. This script times both settings
side by side, in one process, on the same prepared inputs: units in planted
blocks (each block driven by one sparse factor, with weak leakage between blocks
and noise), an untrained SAE (the view does not read it), the default nulls
(10 draws) and two bootstrap members. For each it prints the wall and process
CPU time of both views and how well each view's modules match the blocks (ARI).

    .venv/bin/python bench/unit_view.py --units 3072 --rows 20000
    .venv/bin/python bench/unit_view.py --units 6144 --rows 20000 --only neighbours
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.inference import correlation
from saeatlas.structure.inputs import DEFAULT_TIMEOUT_S, prepared_on_ranks

SETTINGS = {"every-pair": 1 << 62, "neighbours": correlation.DENSE_UNITS}


def planted_blocks(units: int, rows: int, blocks: int, seed: int = 0):
    """``(x [rows, units] float32, block [units])``: each block of units driven by one
    factor firing on a fifth of the rows, with 5% of weak cross-block weights and noise."""
    rng = np.random.default_rng(seed)
    drive = rng.standard_normal((rows, blocks)) * (rng.random((rows, blocks)) < 0.2)
    block = np.arange(units) * blocks // units
    weights = np.zeros((blocks, units))
    weights[block, np.arange(units)] = rng.random(units) + 0.5
    weights += 0.3 * rng.random((blocks, units)) * (rng.random((blocks, units)) < 0.05)
    x = np.maximum(drive @ weights + 0.5 * rng.standard_normal((rows, units)), 0)
    return x.astype(np.float32), block


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=3072)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--blocks", type=int, default=48)
    ap.add_argument("--only", choices=sorted(SETTINGS), help="time one setting only")
    args = ap.parse_args()
    x, block = planted_blocks(args.units, args.rows, args.blocks)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        store = ActivationStore.open(Path(tmp) / "x.npy")
        sae = SparseAutoencoder(
            SAEConfig("topk", d_in=args.units, d_sae=256, k=8), torch.Generator().manual_seed(0)
        )
        cfg = AtlasConfig(null_rows=args.rows, n_bootstrap=2, seed=0)
        names = [args.only] if args.only else list(SETTINGS)

        def views(inp):
            out = {}
            for name in names:
                correlation.DENSE_UNITS = SETTINGS[name]
                inp.mode.views.clear()
                wall, cpu = time.perf_counter(), time.process_time()
                both = (correlation.correlation_view(inp), correlation.correlation_view(inp, True))
                out[name] = (time.perf_counter() - wall, time.process_time() - cpu, both)
            return out

        out = prepared_on_ranks(views, sae, store, cfg, DEFAULT_TIMEOUT_S)
    print(f"{args.units:,} units in {args.blocks} blocks x {args.rows:,} rows")
    for name, (wall, cpu, both) in out.items():
        parts = [
            f"{'cleaned' if v.clean else 'raw'}: {int(v.labels.max()) + 1} modules "
            f"({int(v.module_ok.sum())} significant), ARI {adjusted_rand_score(block, v.labels):.3f}"
            for v in both
        ]
        print(f"  {name:>10}: wall {wall:7.1f} s, CPU {cpu:7.1f} s | " + " | ".join(parts))


if __name__ == "__main__":
    main()
