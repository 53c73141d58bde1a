"""``AblationResult``: the loss increases of every module's ablation and their chance
levels, and how they are computed from the draws (:func:`ablation_result`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..graph.hypergeom import benjamini_hochberg
from ..inference.draws import draws_z
from .random_sets import monte_carlo_p


@dataclass(frozen=True)
class AblationResult:
    """Loss increases from ablating each module, and their chance levels."""

    classes: np.ndarray
    """``[n_classes]`` the label values (empty without labels), or the names of the
    loss terms when the loss has one column per task."""
    clean_loss: float
    effect: np.ndarray
    """``[n_modules]`` mean loss increase when the module is ablated."""
    effect_by_class: np.ndarray
    """``[n_modules, n_classes]`` the same per class."""
    random_mean: np.ndarray
    """``[n_modules]`` mean loss increase of random unit sets matched by layer."""
    random_std: np.ndarray
    z: np.ndarray
    p: np.ndarray
    """``[n_modules]`` empirical one-sided p-value against the random sets."""
    random_by_class_mean: np.ndarray
    """``[n_modules, n_classes]`` random sets' mean loss increase per class."""
    q: np.ndarray
    """``[n_modules]`` ``p`` adjusted over the modules ablated (Benjamini-Hochberg; NaN
    where ``p`` is)."""
    n_random: int
    """Random unit sets per module at most."""
    n_drawn: np.ndarray
    """``[n_modules]`` random unit sets drawn for each module: ``n_random``, or fewer
    once :data:`~.random_sets.STOP_AFTER` did at least its damage."""

    def specialisation(self) -> np.ndarray:
        """``[n_modules, n_classes]`` each class's share of a module's excess damage
        over random sets (rows sum to 1 where the module does any excess damage)."""
        excess = np.clip(self.effect_by_class - self.random_by_class_mean, 0, None)
        total = excess.sum(axis=1, keepdims=True)
        return np.divide(excess, total, out=np.zeros_like(excess), where=total > 0)


def ablation_result(
    classes: np.ndarray,
    clean: float,
    effect: np.ndarray,
    effect_cls: np.ndarray,
    rand: np.ndarray,
    rand_cls: np.ndarray,
    drawn: np.ndarray,
    n_random: int,
) -> AblationResult:
    """The result of the draws: ``rand`` ``[n_modules, n_random]`` the random sets' loss
    increases (NaN past ``drawn``), ``rand_cls`` their mean per class; a module whose
    ``effect`` is NaN was not compared. Without random sets, the effects alone."""
    n_modules = len(effect)
    if n_random == 0:  # no control: effects only
        nan = np.full(n_modules, np.nan)
        rand_cls = np.full_like(rand_cls, np.nan)
        return AblationResult(
            classes, clean, effect, effect_cls, nan, nan, nan, nan, rand_cls,
            q=nan, n_random=0, n_drawn=drawn,
        )  # fmt: skip
    mean, std, z, p = (np.full(n_modules, np.nan) for _ in range(4))
    for m in np.flatnonzero(~np.isnan(effect)):
        draws = rand[m, : drawn[m]]
        mean[m] = draws.mean()
        std[m] = draws.std(ddof=1) if draws.size > 1 else 0.0
        z[m] = draws_z(effect[m], draws)  # NaN: draws all equal
        p[m] = monte_carlo_p(int((draws >= effect[m]).sum()), draws.size, n_random)
    q = benjamini_hochberg(p, skip_nan=True)
    return AblationResult(
        classes, clean, effect, effect_cls, mean, std, z, p, rand_cls,
        q=q, n_random=n_random, n_drawn=drawn,
    )  # fmt: skip
