"""Do the atlas's modules agree with the tasks? The check on the multitask network.

:func:`lesion_check` trains :class:`~saeatlas.demo.multitask.MultiTaskMLP`
(digits, XOR and, with ``n_tasks=3``, a largest-input task, on separate
inputs, shared hidden layers), records its three hidden layers, trains an
ensemble of three joint TopK SAEs in one pass (seeds ``s, s+1, s+2``;
:func:`~saeatlas.train.train_family`), maps the atlas of the first with the
other two as its seed SAEs (:func:`~saeatlas.structure.analyze`), and
measures per unit and module:

- the unit's lesion label: the task its single-unit mean ablation hurts most
  (:func:`saeatlas.structure.causal.lesion.unit_lesions`);
- the unit's task label (activity): the task whose inputs move it (>= 90% of
  the change when one task's inputs are swapped between rows,
  :func:`~saeatlas.demo.multitask.input_dependence`), -1 when mixed or silent;
- each module's effect on each task when all its units are ablated, beyond
  ``n_random`` random unit sets with the same number of units per layer;
- the ARI against the task labels of the atlas's unit modules
  (``atlas.units["module"]``) and, beside it, of the plain-correlation
  baseline: Leiden on the positive part of the units' raw correlations on the
  same rows, no SAE (:func:`correlation_modules`). Both by
  :func:`ari_against_tasks`: over the units with a task label, a unit in no
  module (-1) is a singleton of its own, so leaving a unit out never helps.

The atlas can split a task into several modules (one per group of digit
classes, say), which lowers the ARI of modules against the task labels even
when every module is pure; :meth:`LesionCheck.figures` therefore also labels
each module by the task its own ablation hurts most and compares that, unit by
unit, with the single-unit lesions: two causal measures, one from the atlas's
grouping. ``bench/lesion.py`` prints the figures over seeds and trainings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, homogeneity_score

from ..capture import CaptureConfig, capture_activations
from ..structure import AtlasConfig, LeidenModules, analyze
from ..structure.causal.ablation import ablate_modules
from ..structure.causal.ablation_inputs import atlas_layers
from ..structure.causal.lesion import unit_lesions
from ..structure.graph.units import unit_correlation, unit_correlation_graph
from ..train import TrainConfig, train_family
from .multitask import (
    MULTITASK_LAYERS,
    TASKS,
    input_dependence,
    multitask_data,
    per_task_loss,
    train_multitask,
)

#: SAEs in the ensemble: the analysed one and its seed SAEs (seeds s, s+1, s+2).
N_SAES = 3


def correlation_modules(
    activations: np.ndarray,
    resolutions: tuple[float, ...] = AtlasConfig().resolutions,
    seed: int = 0,
) -> np.ndarray:
    """``[n_units]`` the plain-correlation baseline: Leiden modules of ``activations
    [n_rows, n_units]``'s units on the positive part of their raw Pearson correlations.

    No SAE and no cleaning (``unit_correlation_graph(..., clean=False)``: the global
    mode and the noise bulk stay); Leiden over ``resolutions``, the partition with
    the highest modularity kept (:class:`~saeatlas.structure.LeidenModules`, modules
    of at least 2 units). Units that never vary correlate with nothing and get -1.
    """
    x = np.asarray(activations, dtype=np.float64)
    n_rows = len(x)
    std = x.std(axis=0)
    corr = unit_correlation(x.T @ x, x.mean(axis=0), std, n_rows)
    silent = std <= 0
    corr[silent, :] = 0.0
    corr[:, silent] = 0.0
    graph = unit_correlation_graph(corr, n_rows, clean=False)
    return LeidenModules(tuple(resolutions), min_size=2, random_state=seed).fit(graph).labels_


def ari_against_tasks(unit_module: np.ndarray, task_labels: np.ndarray) -> float:
    """ARI of a partition of units (``unit_module [n_units]``, -1 in no module) against
    their task labels (``task_labels [n_units]``, -1 none).

    Over the units with a task label only; each unit in no module is a singleton
    of its own, so a method cannot raise its score by leaving hard units out.
    The same convention for every method compared.
    """
    unit_module, task_labels = np.asarray(unit_module), np.asarray(task_labels)
    if unit_module.shape != task_labels.shape:
        raise ValueError(
            f"`unit_module` has shape {unit_module.shape} and `task_labels` "
            f"{task_labels.shape}; give one module and one task label per unit."
        )
    keep = task_labels >= 0
    module = unit_module[keep].astype(np.int64)
    alone = module < 0
    module[alone] = module.max(initial=-1) + 1 + np.arange(int(alone.sum()))
    return float(adjusted_rand_score(task_labels[keep], module))


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
    module_q: np.ndarray
    """``[n_modules]`` ``module_p`` adjusted over the modules (Benjamini-Hochberg)."""
    correlation_module: np.ndarray
    """``[n_units]`` the plain-correlation baseline's module of each unit, -1 none
    (:func:`correlation_modules`)."""
    verdict: str | None
    """The atlas's ``summary["verdict"]`` (``None`` where the analysis gives none)."""
    message: str
    """The atlas's ``summary["message"]``."""

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

    def figures(self) -> dict[str, float | int | str | None]:
        """One row of ``bench/lesion.py``'s table: the ARIs of the atlas and of the
        plain-correlation baseline against the task labels side by side, the
        atlas's verdict, then the lesion figures."""
        lab, mod, corr = self.lesion_labels, self.unit_module, self.correlation_module
        both = (lab >= 0) & (mod >= 0)
        task = np.append(self.module_task, -1)  # -1: a unit in no module (or none at all)
        unit_task = task[np.where(mod >= 0, mod, -1)]
        pure = self.activity_labels >= 0
        return {
            **{f"acc_{k}": round(v, 3) for k, v in self.accuracy.items()},
            "ari_atlas_vs_tasks": round(ari_against_tasks(mod, self.activity_labels), 3),
            "ari_corr_vs_tasks": round(ari_against_tasks(corr, self.activity_labels), 3),
            "atlas_units_in_modules": f"{int((mod[pure] >= 0).sum())}/{int(pure.sum())}",
            "corr_units_in_modules": f"{int((corr[pure] >= 0).sum())}/{int(pure.sum())}",
            "corr_modules": int(corr.max(initial=-1)) + 1,
            "verdict": self.verdict,
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
            "ablation_q_le_0.05": int((self.module_q <= 0.05).sum()),
        }


def lesion_check(
    seed: int,
    out_dir: str | Path,
    *,
    l1: float = 0.0,
    prune: float | None = None,
    n_random: int | None = None,
    n_tasks: int = 2,
) -> LesionCheck:
    """Run the check on a multitask network with ``n_tasks`` tasks trained with ``l1`` /
    ``prune`` (see :func:`~saeatlas.demo.multitask.train_multitask`); the store goes to
    ``out_dir``."""
    trained = train_multitask(seed, l1=l1, prune=prune, n_tasks=n_tasks)
    x, y = multitask_data(seed, n_tasks=n_tasks)
    tasks = TASKS[:n_tasks]
    store = capture_activations(
        trained.model, x, list(MULTITASK_LAYERS), Path(out_dir), CaptureConfig(), progress=False
    )
    configs = [
        TrainConfig(d_sae=256, k=16, tokens=300_000, batch_size=512, seed=seed + i)
        for i in range(N_SAES)
    ]
    sae, *seed_saes = [r.sae for r in train_family(store, configs, progress=False)]
    atlas = analyze(sae, store, AtlasConfig(n_null=5, seed=seed), seed_saes=seed_saes)
    layers, cols = atlas_layers(atlas, store)
    mean = np.asarray(store.mean)[cols]
    task_loss = {"labels": y, "unit_mean": mean, "loss_fn": per_task_loss, "loss_names": tasks}
    lesions = unit_lesions(trained.model, x, layers, **task_loss)
    module = atlas.units["module"].to_numpy()
    ablation = ablate_modules(
        trained.model, x, layers, module, n_random=n_random, n_modules=atlas.n_modules, **task_loss
    )
    dep = input_dependence(trained.model, x, seed)
    share = dep / np.maximum(dep.sum(1, keepdims=True), 1e-12)
    live = dep.sum(1) > 1e-8
    activations = store.read().numpy()[:, cols]
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
        module_q=ablation.q,
        correlation_module=correlation_modules(activations, seed=seed),
        verdict=atlas.summary.get("verdict"),
        message=atlas.summary["message"],
    )
