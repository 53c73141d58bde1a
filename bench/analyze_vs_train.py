"""Benchmark: ``saeatlas analyze`` against ``saeatlas train``, both with default settings.

The atlas is an ensemble: ``saeatlas train`` trains it (``--seeds 3`` by default,
in one pass over shared batches) and ``saeatlas analyze`` reuses it (its
dictionary null's source is an ensemble member, so it trains nothing). This
script writes planted activations of 50,000 rows x 128 units (three layers,
modules of features in superposition; ``saeatlas.structure.synthetic.planted``),
then times, side by side in one run, the two commands as a user types them:

    saeatlas train --acts STORE --out SAE --d-sae 1024
    saeatlas analyze --sae SAE --acts STORE --out ATLAS

and prints their wall times and the ratio (target: analyze <= 1.5x train).

    .venv/bin/python bench/analyze_vs_train.py [--rows 50000] [--d-sae 1024]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _saeatlas(*args: str) -> float:
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "saeatlas", *args, "-q"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"saeatlas {args[0]} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    from saeatlas.structure import PlantedConfig, make_planted, save_planted

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--d-sae", type=int, default=1024)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="saeatlas-bench-"))
    try:
        cfg = PlantedConfig.preset(
            "superposition", n_rows=args.rows, layer_sizes=(43, 43, 42), seed=0
        )
        store = save_planted(make_planted(cfg), root / "acts")
        sae, atlas = root / "sae", root / "atlas"
        train = _saeatlas(
            "train", "--acts", str(store), "--out", str(sae), "--d-sae", str(args.d_sae)
        )
        analyze = _saeatlas("analyze", "--sae", str(sae), "--acts", str(store), "--out", str(atlas))
        summary = json.loads((atlas / "atlas.json").read_text())
        rec = {
            "rows": args.rows,
            "units": 128,
            "d_sae": args.d_sae,
            "train_s": round(train, 1),
            "analyze_s": round(analyze, 1),
            "ratio": round(analyze / train, 2),
            "verdict": summary["verdict"],
            "n_significant_modules": summary["n_significant_modules"],
            "ensemble_members": summary["ensemble"]["n_members"],
        }
        print(json.dumps(rec))
        print(
            f"train {train:.1f} s, analyze {analyze:.1f} s: analyze / train = "
            f"{analyze / train:.2f} (target <= 1.5)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
