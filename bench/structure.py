"""Benchmark: time and peak memory of the core atlas (``map_structure``) at growing sizes.

For each (d_sae, rows) the script writes planted activations (384 units over
three layers, 8 modules of features in superposition; ``saeatlas.structure.synthetic.planted``)
and a TopK SAE (k 32) whose decoder holds the planted feature directions
followed by random unit directions (so that the codes have real co-firing
structure at L0 about 32 without training a 65k-latent SAE on two cores). Then,
in a fresh process, it times one bare encoder pass over the same rows (``x @
W_enc + b_enc`` and the top-k, in the analysis's dtype and row blocks of 4096:
the floor any analysis of these codes pays) and then ``map_structure`` with the
default ``AtlasConfig`` (the core atlas: encoding, the ensemble of the SAE on
all rows and one bootstrap resample, the correlation view, and three null
models of 10 draws on 50k rows each, the dictionary null encoding its synthetic
rows), and records both times (wall and process CPU), their ratio, the
process's peak RSS and its peak anonymous memory (sampled ``RssAnon``: the peak
RSS also counts the pages of the memory-mapped store, which the kernel may drop).

Targets (issue 17, 2 CPU cores): the analysis within 1.5x the bare encode pass;
peak RSS <= 4 GiB at 65,536 x 1M and <= 16 GiB at 262,144 x 1M; time linear in
rows (250k, 500k, 1M).

With ``--nproc N`` the analysis runs under ``torchrun --nproc_per_node N`` (gloo):
the time is the slowest rank's, the peak RSS the largest rank's (per rank); the
bare pass is then not timed (the ranks would wait for it); ``--count-in-parts-from
N`` sets ``AtlasConfig.count_in_parts_from``, so that graphs of N latents or more are
counted in parts by all ranks. ``--device cuda`` runs the bare pass and the
analysis on the GPU (``bench/gpu.sh structure``: 65,536 x 1M on one H200, target
1.5x the bare pass).

    .venv/bin/python bench/structure.py                      # 3 sizes x 3 row counts
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
SIZES = tuple(f"{d}x{n}" for d in (16384, 65536, 262144) for n in (250_000, 500_000, 1_000_000))


def make_inputs(d_sae: int, rows: int, k: int, root: Path, units: int = 384) -> tuple[Path, Path]:
    import torch

    from saeatlas.sae import SAEConfig, SparseAutoencoder
    from saeatlas.store import LayerSpec
    from saeatlas.structure import PlantedConfig, make_planted, save_planted

    root.mkdir(parents=True, exist_ok=True)
    npy = root / "acts.npy"
    sae_dir = root / f"sae-{d_sae}"
    cfg = PlantedConfig(
        n_rows=rows,
        layer_sizes=(units // 3,) * 3,
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


def bare_encode(sae_dir: str, acts: str, batch_size: int, device: str) -> tuple[float, float]:
    """(wall, CPU) seconds of ``x @ W_enc + b_enc`` and top-k over every row of ``acts``
    in blocks of ``batch_size`` on ``device``, in the dtype the analysis encodes in (on
    CUDA, the rows copied to the device and the top-k indices and values back, as the
    analysis does)."""
    import numpy as np
    import torch

    from saeatlas.sae import SparseAutoencoder
    from saeatlas.sae.kernels import fast_bf16

    dev = torch.device(device)
    sae = SparseAutoencoder.load(sae_dir)
    x_all = np.load(acts, mmap_mode="r")
    dtype = torch.bfloat16 if fast_bf16(dev) else torch.float32
    W, b = sae.W_enc.detach().to(dev, dtype), sae.b_enc.detach().to(dev, dtype)
    with torch.no_grad():  # one block untimed: library start-up (cuBLAS) is not the pass
        x = torch.from_numpy(np.ascontiguousarray(x_all[:batch_size]))
        (x.to(dev, dtype) @ W + b).topk(sae.cfg.k, dim=-1, sorted=False).values.cpu()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for s in range(0, x_all.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(x_all[s : s + batch_size]))
            top = (x.to(dev, dtype) @ W + b).topk(sae.cfg.k, dim=-1, sorted=False)
            top.indices.cpu(), top.values.cpu()
    return time.perf_counter() - t0, time.process_time() - c0


class AnonPeak:
    """The process's peak anonymous resident memory (``RssAnon`` of ``/proc/self/status``,
    sampled every 0.2 s in a thread): the peak RSS also counts the memory-mapped
    store's file pages, which the kernel may drop at any time."""

    def __init__(self) -> None:
        import threading

        self.peak_kib, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_kib = max(self.peak_kib, _rss_anon_kib())

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return max(self.peak_kib, _rss_anon_kib()) / 1024


def _rss_anon_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def worker(spec: dict) -> None:
    from saeatlas.structure import AtlasConfig, map_structure
    from saeatlas.structure.inference import correlation

    anon = AnonPeak()
    view_seconds = [0.0]  # the correlation view's share (its cost grows with the units)
    view = correlation._correlation_view

    def timed_view(*a, **kw):
        t = time.perf_counter()
        try:
            return view(*a, **kw)
        finally:
            view_seconds[0] += time.perf_counter() - t

    correlation._correlation_view = timed_view
    cfg = AtlasConfig(**spec["config"])
    bare, bare_cpu = (0.0, 0.0)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # ranks would wait for it: one process
        bare, bare_cpu = bare_encode(spec["sae"], spec["acts"], cfg.batch_size, cfg.device)
    t0, c0 = time.perf_counter(), time.process_time()
    atlas = map_structure(spec["sae"], spec["acts"], cfg, progress=False)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    peak_anon = anon.stop()
    s = atlas.summary
    print(  # one line per rank under torchrun
        json.dumps(
            {
                "rank": int(os.environ.get("RANK", "0")),
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "correlation_view_seconds": view_seconds[0],
                "bare_encode_seconds": bare,
                "bare_encode_cpu_seconds": bare_cpu,
                "peak_rss_mib": peak,
                "peak_anon_mib": peak_anon,
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
    p.add_argument(
        "--units", type=int, default=384, help="units of the planted activations (3 layers)"
    )
    p.add_argument("--data", type=Path, default=OUT / "structure-data")
    p.add_argument("--nproc", type=int, default=1, help="ranks (torchrun, gloo)")
    p.add_argument("--device", default="cpu", help="where the analysis and the bare pass run")
    p.add_argument(
        "--count-in-parts-from",
        type=int,
        help="AtlasConfig.count_in_parts_from (default: the library's); under --nproc, "
        "graphs of at least this many latents are counted in parts by all ranks",
    )
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker.read_text()))
        return 0
    results = []
    for size in args.sizes:
        d_sae, rows = (int(v) for v in size.lower().split("x"))
        root = args.data / (f"rows-{rows}" + (f"-units-{args.units}" if args.units != 384 else ""))
        t0 = time.perf_counter()
        npy, sae_dir = make_inputs(d_sae, rows, args.k, root, args.units)
        print(f"{size}: inputs ready in {time.perf_counter() - t0:.0f} s", flush=True)
        spec = root / f"spec-{d_sae}.json"
        config = {"device": args.device}
        if args.count_in_parts_from is not None:
            config["count_in_parts_from"] = args.count_in_parts_from
        spec.write_text(json.dumps({"sae": str(sae_dir), "acts": str(npy), "config": config}))
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
            "units": args.units,
            "nproc": args.nproc,
            "device": args.device,
            "command": " ".join(sys.argv),
            **ranks[0],
            "seconds": max(r["seconds"] for r in ranks),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
            "peak_anon_mib": max(r["peak_anon_mib"] for r in ranks),
        }
        del rec["rank"]
        bare, bare_cpu = rec["bare_encode_seconds"], rec["bare_encode_cpu_seconds"]
        rec["ratio"] = rec["seconds"] / bare if bare else None
        rec["cpu_ratio"] = rec["cpu_seconds"] / bare_cpu if bare_cpu else None
        results.append(rec)
        print(
            f"  d_sae {d_sae:>6,} rows {rows:>9,} units {args.units:,} ranks {args.nproc}: "
            f"{rec['seconds']:7.1f} s (correlation view {rec['correlation_view_seconds']:.1f} s) "
            + (
                f"(bare encode {bare:.1f} s, ratio {rec['ratio']:.2f}; CPU ratio "
                f"{rec['cpu_ratio']:.2f}), "
                if bare
                else ""
            )
            + "peak RSS "
            f"{rec['peak_rss_mib'] / 1024:5.2f} GiB (anonymous {rec['peak_anon_mib'] / 1024:.2f} "
            f"GiB), L0 {rec['mean_l0']:.1f}, edges "
            f"{rec['n_edges']:,}, modules {rec['n_modules']} ({rec['n_significant_modules']} "
            "significant)",
            flush=True,
        )
    OUT.mkdir(exist_ok=True)
    path = OUT / "structure.json"
    earlier = json.loads(path.read_text()).get("results", []) if path.exists() else []

    def key(r: dict) -> tuple:
        return r["d_sae"], r["rows"], r.get("units", 384), r.get("nproc", 1), r.get("device", "cpu")

    ran = {key(r) for r in results}
    merged = [r for r in earlier if key(r) not in ran]
    merged += results
    path.write_text(json.dumps({"cpus": os.cpu_count(), "results": merged}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
