"""Do the atlas's modules agree with single-unit lesions? The check on the multitask network.

:func:`lesion_check` trains :class:`~saeatlas.demo.multitask.MultiTaskMLP`
(digits and XOR at once, shared hidden layers), records its three hidden
layers, trains a joint TopK SAE, maps the atlas, and measures three things
per unit and module:

- the unit's lesion label: the task its single-unit mean ablation hurts most
  (:func:`saeatlas.structure.causal.lesion.unit_lesions`);
- the unit's activity label: the task whose inputs move it (>= 90% of the
  change when one task's inputs are swapped between rows,
  :func:`~saeatlas.demo.multitask.input_dependence`), -1 when mixed;
- each module's effect on each task when all its units are ablated, beyond
  ``n_random`` random unit sets with the same number of units per layer.

The atlas splits a task into several modules (one per group of digit classes,
say), so the ARI of modules against the two lesion labels stays low even when
every module is pure; :meth:`LesionCheck.figures` therefore also labels each module by
the task its own ablation hurts most and compares that, unit by unit, with the
single-unit lesions: two causal measures, one from the atlas's grouping.
``bench/lesion.py`` prints the figures over seeds and trainings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, homogeneity_score

from ..capture import CaptureConfig, capture_activations
from ..structure import AtlasConfig, map_structure
from ..structure.causal.ablation import ablate_modules, atlas_layers
from ..structure.causal.lesion import unit_lesions
from ..train import TrainConfig, train_sae
from .multitask import (
    MULTITASK_LAYERS,
    TASKS,
    input_dependence,
    multitask_data,
    per_task_loss,
    train_multitask,
)


@dataclass(frozen=True)
class LesionCheck:
    accuracy: dict[str, float]
    """Held-out accuracy of the network per task."""
    n_modules: int
    n_significant: int
    unit_module: np.ndarray
    """``[n_units]`` the atlas's module of each unit, -1 none."""
    lesion_labels: np.ndarray
    """``[n_units]`` index into ``TASKS`` of the task the unit's lesion hurts most, -1 none."""
    activity_labels: np.ndarray
    """``[n_units]`` index of the task whose inputs move the unit, -1 mixed or silent."""
    live: np.ndarray
    """``[n_units]`` bool: the unit's activity changes at all."""
    module_excess: np.ndarray
    """``[n_modules, n_tasks]`` loss increase per task when the module is ablated, minus the
    mean over random unit sets."""
    module_p: np.ndarray
    """``[n_modules]`` empirical p of the module's overall effect against the random sets."""

    @property
    def module_task(self) -> np.ndarray:
        """``[n_modules]`` the task each module's ablation hurts most beyond random sets
        (-1 for a module without units, which cannot be ablated)."""
        excess = self.module_excess
        known = ~np.isnan(excess).all(axis=1)
        out = np.full(self.n_modules, -1, dtype=np.int64)
        out[known] = np.nanargmax(excess[known], axis=1)
        return out

    @property
    def own_task_modules(self) -> int:
        """Modules whose ablation hurts most the task most of their lesion-labelled units serve."""
        count = 0
        for m in range(self.n_modules):
            lab = self.lesion_labels[(self.unit_module == m) & (self.lesion_labels >= 0)]
            if lab.size:
                count += int(np.bincount(lab).argmax() == self.module_task[m])
        return count

    def figures(self) -> dict[str, float | int | str]:
        lab, mod = self.lesion_labels, self.unit_module
        both = (lab >= 0) & (mod >= 0)
        unit_task = np.where(mod >= 0, self.module_task[mod.clip(0)], -1)
        pure = self.activity_labels >= 0
        return {
            **{f"acc_{k}": round(v, 3) for k, v in self.accuracy.items()},
            "modules": self.n_modules,
            "significant": self.n_significant,
            "lesion_labelled": int((lab >= 0).sum()),
            "activity_pure_units": f"{int(pure.sum())}/{int(self.live.sum())}",
            "ari_modules_vs_lesions": adjusted_rand_score(lab[both], mod[both]),
            "homogeneity": homogeneity_score(lab[both], mod[both]),
            "modules_hurting_own_task_most": f"{self.own_task_modules}/{self.n_modules}",
            "ari_module_task_vs_lesions": adjusted_rand_score(lab[both], unit_task[both]),
            "units_module_task_is_lesion_task": float((lab[both] == unit_task[both]).mean()),
            "ablation_p_le_0.05": int((self.module_p <= 0.05).sum()),
        }


def lesion_check(
    seed: int,
    out_dir: str | Path,
    *,
    l1: float = 0.0,
    prune: float | None = None,
    n_random: int = 100,
) -> LesionCheck:
    """Run the check on a multitask network trained with ``l1`` / ``prune`` (see
    :func:`~saeatlas.demo.multitask.train_multitask`); the store goes to ``out_dir``."""
    trained = train_multitask(seed, l1=l1, prune=prune)
    x, y = multitask_data(seed)
    store = capture_activations(
        trained.model, x, list(MULTITASK_LAYERS), Path(out_dir), CaptureConfig(), progress=False
    )
    cfg = TrainConfig(d_sae=256, k=16, tokens=300_000, batch_size=512, seed=seed)
    sae = train_sae(store, cfg, progress=False).sae
    atlas = map_structure(sae, store, AtlasConfig(n_null=5, seed=seed))
    layers, cols = atlas_layers(atlas, store)
    mean = np.asarray(store.mean)[cols]
    task_loss = {"labels": y, "unit_mean": mean, "loss_fn": per_task_loss, "loss_names": TASKS}
    lesions = unit_lesions(trained.model, x, layers, **task_loss)
    module = atlas.units["module"].to_numpy()
    ablation = ablate_modules(
        trained.model, x, layers, module, n_random=n_random, n_modules=atlas.n_modules, **task_loss
    )
    dep = input_dependence(trained.model, x, seed)
    share = dep / np.maximum(dep.sum(1, keepdims=True), 1e-12)
    live = dep.sum(1) > 1e-8
    return LesionCheck(
        accuracy=trained.accuracy,
        n_modules=atlas.n_modules,
        n_significant=atlas.n_significant_modules,
        unit_module=module,
        lesion_labels=lesions.labels,
        activity_labels=np.where(live & (share.max(1) >= 0.9), share.argmax(1), -1),
        live=live,
        module_excess=ablation.effect_by_class - ablation.random_by_class_mean,
        module_p=ablation.p,
    )
