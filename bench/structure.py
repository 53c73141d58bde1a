"""Benchmark: time and peak memory of ``saeatlas analyze`` at growing sizes.

For each (d_sae, rows) the script writes planted activations (384 units over
three layers, 8 modules of features in superposition; ``saeatlas.structure.synthetic.planted``)
and a TopK SAE (k 32) whose decoder holds the planted feature directions
followed by random unit directions (so that the codes have real co-firing
structure at L0 about 32 without training a 65k-latent SAE on two cores), then
runs ``map_structure`` with the default ``AtlasConfig`` in a fresh process and
records wall time and that process's peak RSS.

Targets (2 CPU cores): 16384 x 1M within 5 minutes and under 4 GiB;
65536 x 1M under 8 GiB.

With ``--nproc N`` the analysis runs under ``torchrun --nproc_per_node N`` (gloo):
the time is the slowest rank's, the peak RSS the largest rank's (per rank).

    .venv/bin/python bench/structure.py                      # all three sizes
    .venv/bin/python bench/structure.py --sizes 4096x100000  # one size
    .venv/bin/python bench/structure.py --sizes 4096x100000 --nproc 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
SIZES = ("4096x100000", "16384x1000000", "65536x1000000")


def make_inputs(d_sae: int, rows: int, k: int, root: Path) -> tuple[Path, Path]:
    import torch

    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec
    from saeatlas.structure import PlantedConfig, make_planted, save_planted

    root.mkdir(parents=True, exist_ok=True)
    npy = root / "acts.npy"
    sae_dir = root / f"sae-{d_sae}"
    cfg = PlantedConfig(
        n_rows=rows,
        layer_sizes=(128, 128, 128),
        n_modules=8,
        features_per_module=64,
        n_background_features=128,
        module_rate=0.2,
        p_in=0.25,
        seed=0,
    )
    data = make_planted(cfg) if not npy.exists() or not sae_dir.exists() else None
    if not npy.exists():
        save_planted(data, npy)
    if not sae_dir.exists():
        g = torch.Generator().manual_seed(0)
        W = torch.randn(d_sae, data.X.shape[1], generator=g)
        planted = torch.from_numpy(data.scaled_directions).float()
        W[: planted.shape[0]] = planted
        W /= W.norm(dim=1, keepdim=True)
        x = torch.from_numpy(data.X[:20000])
        layers = tuple(LayerSpec(n, a, b, (b - a,), "sample") for n, a, b in data.layer_slices())
        sae = SparseAutoencoder(
            SAEConfig(architecture="topk", d_in=x.shape[1], d_sae=d_sae, k=k, layers=layers), g
        )
        with torch.no_grad():
            sae.W_dec.copy_(W)
            sae.W_enc.copy_(W.t())
            sae.b_dec.copy_(x.mean(0))
        sae.save(sae_dir)
    del data
    return npy, sae_dir


def worker(spec: dict) -> None:
    from saeatlas.structure import AtlasConfig, map_structure

    t0 = time.perf_counter()
    atlas = map_structure(spec["sae"], spec["acts"], AtlasConfig(), progress=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    s = atlas.summary
    print(  # one line per rank under torchrun
        json.dumps(
            {
                "rank": int(os.environ.get("RANK", "0")),
                "seconds": seconds,
                "peak_rss_mib": peak,
                "n_rows": s["n_rows_encoded"],
                "mean_l0": s["mean_l0"],
                "n_edges": s["graph"]["n_edges"],
                "n_modules": s["n_modules"],
                "n_significant_modules": s["n_significant_modules"],
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="D_SAExROWS ...")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--data", type=Path, default=OUT / "structure-data")
    p.add_argument("--nproc", type=int, default=1, help="ranks (torchrun, gloo)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker.read_text()))
        return 0
    results = []
    for size in args.sizes:
        d_sae, rows = (int(v) for v in size.lower().split("x"))
        root = args.data / f"rows-{rows}"
        t0 = time.perf_counter()
        npy, sae_dir = make_inputs(d_sae, rows, args.k, root)
        print(f"{size}: inputs ready in {time.perf_counter() - t0:.0f} s", flush=True)
        spec = root / f"spec-{d_sae}.json"
        spec.write_text(json.dumps({"sae": str(sae_dir), "acts": str(npy)}))
        launch = [sys.executable]
        if args.nproc > 1:
            launch += ["-m", "torch.distributed.run", "--standalone"]
            launch += ["--nproc_per_node", str(args.nproc)]
        run = subprocess.run(
            [*launch, __file__, "--worker", str(spec)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if run.returncode:
            print(run.stderr[-3000:])
            results.append({"d_sae": d_sae, "rows": rows, "error": run.stderr[-500:]})
            continue
        ranks = [json.loads(l) for l in run.stdout.splitlines() if l.startswith('{"rank"')]
        rec = {
            "d_sae": d_sae,
            "rows": rows,
            "nproc": args.nproc,
            "command": " ".join(sys.argv),
            **ranks[0],
            "seconds": max(r["seconds"] for r in ranks),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
        }
        del rec["rank"]
        results.append(rec)
        print(
            f"  d_sae {d_sae:>6,} rows {rows:>9,} ranks {args.nproc}: {rec['seconds']:7.1f} s, "
            f"peak RSS "
            f"{rec['peak_rss_mib'] / 1024:5.2f} GiB, L0 {rec['mean_l0']:.1f}, edges "
            f"{rec['n_edges']:,}, modules {rec['n_modules']} ({rec['n_significant_modules']} "
            "significant)",
            flush=True,
        )
    OUT.mkdir(exist_ok=True)
    path = OUT / "structure.json"
    earlier = json.loads(path.read_text()).get("results", []) if path.exists() else []
    ran = {(r["d_sae"], r["rows"], r.get("nproc", 1)) for r in results}
    merged = [r for r in earlier if (r["d_sae"], r["rows"], r.get("nproc", 1)) not in ran]
    merged += results
    path.write_text(json.dumps({"cpus": os.cpu_count(), "results": merged}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
