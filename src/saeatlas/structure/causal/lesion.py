"""Single-unit lesions: which task (or class) each unit serves, for checking modules.

Every unit is ablated alone (set to its mean, or to zero) and the loss increase
is measured per group: per label for a ``[batch]`` loss, per loss term (task)
for a ``[batch, terms]`` loss (see :func:`.ablation.ablate_modules`). A unit is
labelled by the group it hurts most, after each group's effects are scaled by
that group's largest single-unit effect (tasks differ in how fragile they are:
without the scaling the fragile task claims every unit); a unit whose scaled
effect stays below ``min_effect`` everywhere is labelled -1 (no single-unit
role: redundant or unused). These are the lesion labels of lesion studies of
modularity (e.g. Csordás et al. 2021, "Are neural nets modular?"), the ground
truth the atlas's modules are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError
from ...losses import PerSampleLoss, per_sample_cross_entropy
from ...store import LayerSpec
from .ablation import ablate_modules


@dataclass(frozen=True)
class LesionResult:
    groups: np.ndarray
    """``[n_groups]`` label values or loss-term names."""
    effect: np.ndarray
    """``[n_units, n_groups]`` loss increase per group when the unit alone is ablated."""
    scaled: np.ndarray
    """``effect`` over each group's largest single-unit effect."""
    labels: np.ndarray
    """``[n_units]`` index into ``groups`` of the group each unit serves, -1 none."""


def lesion_labels(effect: np.ndarray, min_effect: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Scaled effects and labels from an ``[n_units, n_groups]`` effect matrix (see module doc)."""
    if not 0 <= min_effect < 1:
        raise ConfigError(f"`min_effect` must be in [0, 1), got {min_effect}.")
    top = np.nanmax(effect, axis=0, keepdims=True)
    scaled = np.divide(effect, top, out=np.zeros_like(effect), where=top > 0)
    labels = np.where(scaled.max(axis=1) > min_effect, scaled.argmax(axis=1), -1)
    return scaled, labels


@torch.no_grad()
def unit_lesions(
    model: torch.nn.Module,
    inputs: Any,
    layers: Sequence[LayerSpec],
    *,
    labels: Any = None,
    unit_mean: np.ndarray | None = None,
    mode: str = "mean",
    loss_fn: PerSampleLoss = per_sample_cross_entropy,
    loss_names: Sequence[str] | None = None,
    min_effect: float = 0.05,
    batch_size: int = 256,
    progress: bool = False,
) -> LesionResult:
    """Lesion every unit of ``layers`` alone; label each by the group it serves."""
    n_units = layers[-1].stop
    res = ablate_modules(
        model,
        inputs,
        layers,
        np.arange(n_units),
        labels=labels,
        unit_mean=unit_mean,
        mode=mode,
        loss_fn=loss_fn,
        loss_names=loss_names,
        n_random=0,
        batch_size=batch_size,
        progress=progress,
    )
    scaled, unit_labels = lesion_labels(res.effect_by_class, min_effect)
    return LesionResult(res.classes, res.effect_by_class, scaled, unit_labels)
