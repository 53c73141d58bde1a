"""Atlas modules against the tasks of a network trained on two or three tasks at once.

For every seed, number of tasks and training setting,
:func:`saeatlas.demo.lesion_check.lesion_check` trains the multitask network
(digits + XOR, and with three tasks a largest-input task, each on its own
inputs; shared hidden layers, one head per task; optionally with a weight L1
penalty or iterative magnitude pruning), trains an ensemble of three SAEs in
one pass and maps the atlas of the first with the other two as seed SAEs,
labels every unit by the task whose inputs move it (its task label) and by
single-unit lesions, and ablates every module per task against 100 random
unit sets.

One row per run. First the question of issue 14 (the atlas's modules against
the tasks, beside plain correlation clustering):

- ``ari_atlas_vs_tasks``: ARI of the atlas's unit modules
  (``atlas.units["module"]``) against the task labels;
- ``ari_corr_vs_tasks``: the same for Leiden on the positive part of the
  units' raw correlations on the same rows (no SAE; best modularity over the
  atlas's resolutions), the plain-correlation baseline;

both over the units with a task label (moved >= 90% by one task's inputs),
with every unit in no module (-1) a singleton of its own, for both methods
(``*_units_in_modules``: how many labelled units each method puts in a
module); then ``verdict``, the atlas's ``summary["verdict"]`` (its
``message`` is printed under each row). Then, as before: accuracies,
modules, how many units are task-pure in activity, ARI and homogeneity of
the modules against the lesion labels, how many modules hurt their own
units' task most, and the agreement (ARI and fraction of units) between
each unit's lesion label and the task its module's ablation hurts most.

Dense and pruned networks, two and three tasks (about 30 s per run on 2 CPU
cores with ``OMP_NUM_THREADS=1``; with torch's default threads on a busy
machine one run took 8.5 minutes); the README's figures, one process per
number of tasks side by side:

    .venv/bin/python bench/lesion.py --seeds 0 1 2 3 4 5 6 7 --tasks 2 --prune 1.0 0.1 0.03
    .venv/bin/python bench/lesion.py --seeds 0 1 2 3 4 5 6 7 --tasks 3 --prune 1.0 0.1 0.03

``--prune 1.0`` is the dense control with the same retraining rounds as
pruning; without ``--prune`` the network is trained once, with no rounds.
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
    ap.add_argument(
        "--tasks",
        type=int,
        nargs="+",
        default=[2, 3],
        choices=[2, 3],
        help="numbers of tasks of the network (2: digits and xor; 3: also largest input)",
    )
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
    pd.set_option("display.width", 250)
    with tempfile.TemporaryDirectory() as tmp:
        for n_tasks in args.tasks:
            for prune in args.prune:
                for l1 in args.l1:
                    for seed in args.seeds:
                        t0 = time.perf_counter()
                        out = Path(tmp) / f"store-{n_tasks}-{seed}-{l1}-{prune}"
                        check = lesion_check(seed, out, l1=l1, prune=prune, n_tasks=n_tasks)
                        rows.append(
                            {
                                "tasks": n_tasks,
                                "seed": seed,
                                "l1": l1,
                                "prune": prune,
                                **check.figures(),
                                "seconds": round(time.perf_counter() - t0, 1),
                            }
                        )
                        print(pd.DataFrame(rows[-1:]).to_string(index=False))
                        print(f"message: {check.message}", flush=True)
    table = pd.DataFrame(rows)
    first = [c for c in table.columns if not c.startswith("acc_")]
    # accuracies of every task (a two-task run has none for the third) after the settings
    order = first[:4] + [c for c in table.columns if c.startswith("acc_")] + first[4:]
    print(table[order].to_string(index=False))


if __name__ == "__main__":
    main()
