"""Atlas modules against single-unit lesion labels on a network trained on two tasks at once.

The network (:mod:`saeatlas.demo.multitask`: digits + an XOR task on separate
inputs, shared hidden layers, two heads) is captured at its three hidden
layers, a TopK SAE is trained on them jointly, and the atlas's unit modules are
compared with the units' lesion labels (:mod:`saeatlas.structure.lesion`) by
ARI and homogeneity; each module is ablated per task against 100 random unit
sets. It also says how many units are task-pure in activity (>= 90% of the
change when one task's inputs are swapped between rows comes from that task,
:func:`saeatlas.demo.multitask.input_dependence`) and how homogeneous the
modules are in those activity labels: co-activation can only follow the tasks
where the units' activity does. Prints one table per seed.

    .venv/bin/python bench/lesion.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, homogeneity_score

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.demo.multitask import (
    MULTITASK_LAYERS,
    TASKS,
    input_dependence,
    multitask_data,
    per_task_loss,
    train_multitask,
)
from saeatlas.structure import AtlasConfig, map_structure
from saeatlas.structure.ablation import ablate_modules, atlas_layers
from saeatlas.structure.lesion import unit_lesions
from saeatlas.train import TrainConfig, train_sae


def run(seed: int, root: Path, l1: float) -> dict:
    t0 = time.perf_counter()
    trained = train_multitask(seed, l1=l1)
    x, y = multitask_data(seed)
    store = capture_activations(
        trained.model,
        x,
        list(MULTITASK_LAYERS),
        root / f"store{seed}-{l1}",
        CaptureConfig(),
        progress=False,
    )
    cfg = TrainConfig(d_sae=256, k=16, tokens=300_000, batch_size=512, seed=seed)
    sae = train_sae(store, cfg, progress=False).sae
    atlas = map_structure(sae, store, AtlasConfig(n_null=5, seed=seed))
    layers, cols = atlas_layers(atlas, store)
    mean = np.asarray(store.mean)[cols]
    lesions = unit_lesions(
        trained.model,
        x,
        layers,
        labels=y,
        unit_mean=mean,
        loss_fn=per_task_loss,
        loss_names=TASKS,
    )
    module = atlas.units["module"].to_numpy()
    both = (lesions.labels >= 0) & (module >= 0)
    ablation = ablate_modules(
        trained.model,
        x,
        layers,
        module,
        labels=y,
        unit_mean=mean,
        loss_fn=per_task_loss,
        loss_names=TASKS,
        n_random=100,
        n_modules=atlas.n_modules,
    )
    # Which task's inputs move each unit (what co-activation can see), -1 when mixed.
    dep = input_dependence(trained.model, x, seed)
    share = dep / np.maximum(dep.sum(1, keepdims=True), 1e-12)
    live = dep.sum(1) > 1e-8
    activity = np.where(live & (share.max(1) >= 0.9), share.argmax(1), -1)
    pure = activity >= 0
    has_lesion = lesions.labels >= 0
    in_pure = pure & (module >= 0)
    excess = ablation.effect_by_class - ablation.random_by_class_mean
    agree = 0
    for m in range(atlas.n_modules):  # the task the module hurts most beyond random sets
        labelled = lesions.labels[(module == m) & (lesions.labels >= 0)]  # vs its units' lesions
        if labelled.size:
            agree += int(np.bincount(labelled).argmax() == np.nanargmax(excess[m]))
    return {
        "seed": seed,
        "l1": l1,
        **{f"acc_{k}": round(v, 3) for k, v in trained.accuracy.items()},
        "modules": atlas.n_modules,
        "significant": atlas.n_significant_modules,
        "lesion_labelled": int((lesions.labels >= 0).sum()),
        "ari_all_units": adjusted_rand_score(lesions.labels, module),
        "ari_labelled_in_modules": adjusted_rand_score(lesions.labels[both], module[both]),
        "homogeneity": homogeneity_score(lesions.labels[both], module[both]),
        "activity_pure_units": f"{int(pure.sum())}/{int(live.sum())}",
        "lesion_labelled_activity_pure": f"{int((pure & has_lesion).sum())}/{int(has_lesion.sum())}",
        "homogeneity_activity": homogeneity_score(activity[in_pure], module[in_pure]),
        "modules_hurting_their_units_task_most": agree,
        "ablation_p_le_0.05": int((ablation.p <= 0.05).sum()),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--l1", type=float, nargs="+", default=[0.0], help="weight L1 penalties")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(s, Path(tmp), l1) for l1 in args.l1 for s in args.seeds]
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
