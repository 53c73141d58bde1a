"""Atlas modules against single-unit lesion labels on a network trained on two tasks at once.

For every seed and training setting, :func:`saeatlas.demo.lesion_check.lesion_check`
trains the multitask network (digits + XOR on separate inputs, shared hidden
layers, two heads; optionally with a weight L1 penalty or iterative magnitude
pruning), maps its atlas, labels every unit by single-unit lesions and by the
task whose inputs move it, and ablates every module per task against 100
random unit sets. One row per run: accuracies, modules, how many units are
task-pure in activity, ARI and homogeneity of the modules against the lesion
labels, how many modules hurt their own units' task most, and the agreement
(ARI and fraction of units) between each unit's lesion label and the task its
module's ablation hurts most.

    .venv/bin/python bench/lesion.py --seeds 0 1 2 3 4 --prune 0.1 1.0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from saeatlas.demo.lesion_check import lesion_check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--l1", type=float, nargs="+", default=[0.0], help="weight L1 penalties")
    ap.add_argument(
        "--prune",
        type=float,
        nargs="+",
        default=[None],
        help="fractions of weights kept by iterative magnitude pruning (1.0: the same "
        "retraining without pruning; default: no pruning rounds)",
    )
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for prune in args.prune:
            for l1 in args.l1:
                for seed in args.seeds:
                    t0 = time.perf_counter()
                    out = Path(tmp) / f"store-{seed}-{l1}-{prune}"
                    check = lesion_check(seed, out, l1=l1, prune=prune)
                    rows.append(
                        {
                            "seed": seed,
                            "l1": l1,
                            "prune": prune,
                            **check.figures(),
                            "seconds": round(time.perf_counter() - t0, 1),
                        }
                    )
                    print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
