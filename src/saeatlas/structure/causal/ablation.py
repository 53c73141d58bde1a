"""Causal check: ablate a module's units in the model and measure the loss, against chance.

For every module, its units are set to their mean over the store (``mean``,
the default: the units stop carrying information but the layer keeps its
typical input for the next one) or to zero (``zero``) during the forward
pass, and the per-sample loss is compared with the clean run, overall and per
class. The control is the same ablation of random unit sets with as many
units in each layer as the module has (``n_random`` draws): effect size ``z =
(effect - mean_random) / std_random`` (NaN where the random draws are all equal)
and the empirical p-value ``(1 + #{random >= effect}) / (1 + n_random)``, or
``STOP_AFTER / drawn`` for a module whose draws stopped early; the p-values are
adjusted over the modules ablated (``q``), and a module counts as hurting the loss
more than random sets when ``q <= ALPHA`` (:mod:`.random_sets`: how many sets,
when they stop). The module x class matrix of loss increases shows which module
serves which class (in the spirit of lesion studies of modular networks, e.g.
Csordás et al. 2021, "Are neural nets modular?").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..._coordinator import run_ranks
from ..._progress import progress_bar
from ...capture.inputs import InputBatch
from ...capture.recorder import check_token_ids, model_error, own_copy
from ...errors import AtlasError, ConfigError, ShapeError
from ...losses import PerSampleLoss, class_indices, per_sample_cross_entropy
from ...store import ActivationStore, LayerSpec
from ..atlas import check_atlas_argument
from ..fingerprints import check_made_from
from ..inference.outcome import ABLATION_ALPHA as ALPHA
from ..inference.outcome import decide
from ..inputs import DEFAULT_TIMEOUT_S
from .ablation_inputs import (
    _check_finite,
    _check_modules,
    _model_batches,
    ablation_facts,
    atlas_layers,
    check_ablation_arguments,
    check_captured_model,
    check_store_labels,
    label_classes,
)
from .ablation_result import AblationResult, ablation_result
from .random_sets import STOP_AFTER, draws_for
from .units import Ablator

log = logging.getLogger(__name__)

MODES = ("mean", "zero")


@torch.no_grad()
def ablate_modules(
    model: torch.nn.Module,
    inputs: Any,
    layers: Sequence[LayerSpec],
    unit_module: np.ndarray,
    *,
    labels: Any = None,
    unit_mean: np.ndarray | None = None,
    mode: str = "mean",
    loss_fn: PerSampleLoss = per_sample_cross_entropy,
    n_random: int | None = None,
    batch_size: int = 256,
    random_state: int = 0,
    tokenizer: Any = None,
    max_length: int | None = None,
    output_index: int | str | None = None,
    n_modules: int | None = None,
    loss_names: Sequence[str] | None = None,
    progress: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AblationResult:
    """Ablate every module's units (``unit_module`` ``[n_units]``, -1 none) and random
    unit sets matched by layer; see the module docstring.

    ``layers`` map the units to the model's hook points (the Atlas's layers);
    ``unit_mean`` ``[n_units]`` is needed for ``mode="mean"``; ``n_modules``
    (default: the largest label + 1) counts modules without units too, whose
    figures are NaN. ``loss_fn`` returns ``[batch]`` losses, split by label
    (``classes`` are the label values), or ``[batch, terms]`` (one column per
    task of a multi-task model; the effect is their sum and the split is by
    term, named by ``loss_names``).

    Under ``torchrun`` (or an initialised process group) every rank calls this alike,
    with the same model, inputs and modules: rank r ablates the modules m with
    ``m % ranks == r`` (each with its own random sets, drawn from ``(random_state, m)``)
    and every rank returns the result one process computes. ``timeout_s``: seconds a
    rank waits for the others where they meet before it stops with an error.
    """
    kinds = dict(n_random=n_random, batch_size=batch_size, random_state=random_state)
    check_ablation_arguments(
        model, **kinds, max_length=max_length, loss_fn=loss_fn, progress=progress
    )
    if mode not in MODES:
        raise ConfigError(f"Unknown ablation `mode` {mode!r}; expected one of: {list(MODES)}.")
    n_units = layers[-1].stop
    if len(unit_module) != n_units:
        raise ConfigError(
            f"`unit_module` has {len(unit_module)} units but the layers have {n_units}."
        )
    if mode == "mean" and unit_mean is None:
        raise ConfigError("Mean ablation needs `unit_mean` (the units' means over the store).")
    _check_modules(np.asarray(unit_module), n_modules, unit_mean if mode == "mean" else None)
    values = np.zeros(n_units) if mode == "zero" else np.asarray(unit_mean, dtype=np.float64)
    given = model  # hook names are the model's (or its nnsight wrapper's)
    model, batches = _model_batches(model, inputs, labels, batch_size, tokenizer, max_length)
    batches = list(batches)
    y = (
        np.concatenate([b.labels for b in batches])
        if batches and all(b.labels is not None for b in batches)
        else None
    )
    if y is not None and loss_fn is per_sample_cross_entropy:
        y = class_indices(y)  # split by the loss's classes: '1' and '1.0' are one class
    was_training = model.training
    model.eval()
    ablator = Ablator(given, layers, values, output_index)

    def loss(b: InputBatch, start: int) -> np.ndarray:
        ablator.new_pass()
        try:
            output = model(*own_copy(b.args), **own_copy(b.kwargs))  # as given, every pass
        except AtlasError:  # raised by a hook: already says what is wrong
            raise
        except Exception as e:
            raise model_error(
                e, f"inputs {start}..{start + b.n_samples - 1}", model, b.kwargs
            ) from e
        return loss_fn(output, b).double().cpu().numpy()

    starts = np.cumsum([0] + [b.n_samples for b in batches])
    for b, s in zip(batches, starts):  # as the capture does: a GPU's device-side assert
        check_token_ids(model, b, f"inputs {s}..{s + b.n_samples - 1}")

    def losses(units: np.ndarray | None) -> np.ndarray:
        ablator.set(units if units is not None else np.zeros(0, dtype=np.int64))
        return np.concatenate([loss(b, s) for b, s in zip(batches, starts)])

    def summarise(per_sample: np.ndarray) -> tuple[float, np.ndarray]:
        if per_sample.ndim == 2:  # one column per loss term (task): the terms are the groups
            return float(per_sample.sum(axis=1).mean()), per_sample.mean(axis=0)
        by_class = (
            np.array([per_sample[y == c].mean() for c in classes]) if y is not None else np.zeros(0)
        )
        return float(per_sample.mean()), by_class

    unit_layer = np.concatenate([np.full(l.n_units, i) for i, l in enumerate(layers)])
    if n_modules is None:
        n_modules = int(unit_module.max()) + 1 if unit_module.size else 0
    n_modules = max(n_modules, 0)
    n_random = draws_for(n_random, np.unique(unit_module[unit_module >= 0]).size)

    def module(m: int, bar: Any) -> tuple:
        """Module ``m``'s effect, effect by class, random sets' effects (NaN past those
        drawn), their mean by class, the sets drawn, and whether any was undefined."""
        rand = np.full(n_random, np.nan)  # NaN: not drawn (stopped early)
        units = np.flatnonzero(unit_module == m)
        if not units.size:
            bar.advance(1 + n_random)
            nan = np.full(classes.size, np.nan)
            return np.nan, nan, rand, nan, 0, False
        e, ec = summarise(losses(units))
        effect, effect_cls = e - clean, ec - clean_by_class
        bar.advance()
        per_layer = np.bincount(unit_layer[units], minlength=len(layers))
        # each module's own stream: its sets do not depend on where the draws of the
        # modules before it stopped, nor on the rank that draws them
        rng = np.random.default_rng([random_state, m])
        rand_cls, drawn, as_bad = np.zeros(classes.size), 0, 0  # as_bad: sets that did
        for r in range(n_random):  # at least the module's damage
            draw = np.concatenate(
                [
                    rng.choice(np.flatnonzero(unit_layer == i), k, replace=False)
                    for i, k in enumerate(per_layer)
                    if k
                ]
            )
            e, ec = summarise(losses(draw))
            rand[r] = e - clean
            rand_cls += ec - clean_by_class
            drawn += 1
            bar.advance()
            as_bad += bool(rand[r] >= effect)
            if as_bad >= STOP_AFTER:  # its p is no longer small: stop here
                bar.advance(n_random - drawn)
                break
        # a NaN draw counted as one the module beat (its p fell to 1/(n_random+1)), and
        # an infinite effect beat every draw
        undefined = not (np.isfinite(effect) and np.isfinite(rand[:drawn]).all())
        return effect, effect_cls, rand, rand_cls / max(drawn, 1), drawn, undefined

    # under torchrun (or an initialised group) every rank ablates its share of the
    # modules (module m on rank m % ranks) and every rank gets them all in order
    def share(coord: Any) -> list[tuple]:
        """Every module's figures; this rank's progress bar counts its own share."""
        if coord.distributed:
            settings = dict(kinds, mode=mode, n_random=n_random, n_modules=n_modules)
            name = f"{getattr(loss_fn, '__module__', '')}.{getattr(loss_fn, '__qualname__', '')}"
            settings.update(max_length=max_length, loss_fn=name, loss_names=loss_names)
            settings.update(output_index=output_index)
            coord.agree(
                ablation_facts(model, inputs, layers, unit_module, values, y, settings),
                "this ablation",
                "Every rank must ablate the same modules of the same model on the same inputs "
                "with the same settings: give every rank the same files and flags.",
            )
        mine = len(range(coord.world.rank, n_modules, coord.world.size))
        show = progress and coord.world.is_main
        with progress_bar("Ablating modules", mine * (1 + n_random), show) as bar:
            return coord.spread(n_modules, lambda m: module(m, bar))

    try:
        clean_losses = losses(None)
        _check_finite(clean_losses)
        if clean_losses.ndim == 2:
            names = loss_names or [str(i) for i in range(clean_losses.shape[1])]
            if len(names) != clean_losses.shape[1]:
                raise ConfigError(
                    f"The loss has {clean_losses.shape[1]} terms but `loss_names` "
                    f"names {len(names)}."
                )
            classes = np.asarray(names)
        else:
            classes = label_classes(y) if y is not None else np.zeros(0)
        clean, clean_by_class = summarise(clean_losses)
        per_module = run_ranks("ablation", None, timeout_s, share)
    finally:
        ablator.remove()
        model.train(was_training)

    def column(i: int, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        return np.array([r[i] for r in per_module], dtype=dtype).reshape(n_modules, *shape)

    c = classes.size
    effect, effect_cls, rand = column(0, ()), column(1, (c,)), column(2, (n_random,))
    rand_cls, drawn = column(3, (c,)), column(4, (), np.int64)
    undefined = np.flatnonzero(column(5, (), bool))
    if undefined.size:
        log.warning(
            "Ablating module(s) %s (or random unit sets like them) made the loss NaN or Inf, "
            "so their ablation effect, z and p are undefined (NaN), not compared.",
            undefined[:10].tolist(),
        )
        effect[undefined], effect_cls[undefined] = np.nan, np.nan
        rand[undefined], rand_cls[undefined] = np.nan, np.nan
    return ablation_result(classes, clean, effect, effect_cls, rand, rand_cls, drawn, n_random)


def ablate_atlas(
    atlas: Any,
    model: torch.nn.Module,
    inputs: Any,
    store: ActivationStore | str | Path,
    *,
    labels: Any = None,
    mode: str = "mean",
    loss_fn: PerSampleLoss = per_sample_cross_entropy,
    n_random: int | None = None,
    batch_size: int = 256,
    random_state: int = 0,
    tokenizer: Any = None,
    max_length: int | None = None,
    progress: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AblationResult:
    """Run :func:`ablate_modules` on an Atlas's modules and write the results into it
    (under ``torchrun``, on every rank, as :func:`ablate_modules` says).

    ``store`` is the store the atlas was made from, or its path (layers and unit means).
    Adds ``ablation_effect``, ``ablation_z``, ``ablation_p`` (empirical, against
    ``n_random`` random unit sets with the module's units per layer; by default
    :func:`.random_sets.random_sets_needed`; a module's draws stop once :data:`STOP_AFTER` did at
    least its damage), ``ablation_q`` (``ablation_p`` adjusted over the modules),
    ``ablation_draws`` (the sets drawn) and ``ablation_random_mean`` to
    ``atlas.modules``; the module x label table
    ``atlas.ablation`` (``module``, ``label``, ``effect``, ``random_effect``,
    ``specialisation``); and ``summary["ablation"]``. Texts are cut to
    ``max_length`` tokens, by default the store's own (its capture's), so the
    model sees the tokens the atlas was made from.
    """
    check_atlas_argument(atlas, ", ablate it, and save it again")
    kinds = dict(n_random=n_random, batch_size=batch_size, random_state=random_state)
    check_ablation_arguments(
        model, **kinds, max_length=max_length, loss_fn=loss_fn, progress=progress
    )
    if not isinstance(store, ActivationStore):  # its path, as every other stage takes
        store = ActivationStore.open(store)
    # another capture's means, with the same layers, were set as the ablated units' values
    check_made_from(atlas.summary, None, store)
    check_captured_model(model, store)
    check_store_labels(store, inputs, labels)
    layers, cols = atlas_layers(atlas, store)
    if max_length is None:
        max_length = store.max_length
    # the element of tuple and dict outputs the store recorded: the first one was set,
    # another tensor than the atlas's units, without a word (the same width), or refused
    output_index = store.output_index
    res = ablate_modules(
        model,
        inputs,
        layers,
        atlas.units["module"].to_numpy(),
        labels=labels,
        unit_mean=np.asarray(store.mean, dtype=np.float64)[cols],
        mode=mode,
        loss_fn=loss_fn,
        n_random=n_random,
        batch_size=batch_size,
        random_state=random_state,
        tokenizer=tokenizer,
        max_length=max_length,
        output_index=output_index,
        progress=progress,
        timeout_s=timeout_s,
    )
    n = len(atlas.modules)
    if len(res.effect) != n:  # modules without units cannot be ablated
        raise ShapeError(f"The atlas lists {n} modules but its units belong to {len(res.effect)}.")
    atlas.modules["ablation_effect"] = res.effect
    atlas.modules["ablation_z"] = res.z
    atlas.modules["ablation_p"] = res.p
    atlas.modules["ablation_q"] = res.q
    atlas.modules["ablation_draws"] = res.n_drawn
    atlas.modules["ablation_random_mean"] = res.random_mean
    spec = res.specialisation()
    atlas.ablation = pd.DataFrame(
        {
            "module": np.repeat(np.arange(n), res.classes.size),
            "label": np.tile(res.classes.astype(str), n),
            "effect": res.effect_by_class.ravel(),
            "random_effect": res.random_by_class_mean.ravel(),
            "specialisation": spec.ravel(),
        }
    )
    atlas.summary["ablation"] = {
        "mode": mode,
        "n_random": res.n_random,
        "stop_after": STOP_AFTER,
        "alpha": ALPHA,
        "clean_loss": res.clean_loss,
        "classes": [str(c) for c in res.classes],
        "n_modules_above_random": int((res.q <= ALPHA).sum()),
    }
    decide(atlas)  # the counts name the modules whose ablation does not beat random sets
    return res
