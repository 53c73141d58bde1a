"""What an ablation checks before it runs: its inputs, their labels and the clean loss.

:func:`check_ablation_inputs` runs before an analysis whose ablation comes after
it (``saeatlas run``, ``analyze --model``), so that inputs the ablation would fail
on are refused before hours of work; :mod:`.ablation` calls the same checks.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..._validation import check_flag_argument, shown
from ...capture.inputs import InputBatch, iter_input_batches, model_and_tokenizer
from ...capture.job import inputs_fingerprint, model_details, model_fingerprint
from ...capture.labels import label_array
from ...capture.models import input_dtype, takes_token_ids
from ...capture.nnsight import check_model_argument, unwrap_model
from ...capture.recorder import check_token_ids, model_error
from ...errors import AtlasError, ConfigError, NonFiniteError, ShapeError
from ...losses import PerSampleLoss, class_indices, model_logits, per_sample_cross_entropy
from ...store import ActivationStore, LayerSpec
from .random_sets import MAX_RANDOM
from .units import Ablator

log = logging.getLogger(__name__)


def check_ablation_arguments(
    model: Any,
    *,
    n_random: Any,
    batch_size: Any,
    random_state: Any,
    max_length: Any,
    loss_fn: Any,
    progress: Any,
) -> None:
    """Refuse arguments of the wrong kind before any work (``ablate_atlas`` and
    ``ablate_modules`` from Python; the CLI passes the right kinds): a model's SPEC given
    as text ended in an AttributeError, ``n_random="2"``, ``batch_size=64.0`` or
    ``random_state="0"`` in TypeErrors (``True`` was read as 1), ``loss_fn=None`` in
    "not callable" once the inputs were read, ``n_random=10**9`` was as many forward
    passes (the CLI allows at most :data:`MAX_RANDOM`), and ``progress="no"`` was read by
    its truth."""
    check_model_argument(model)
    for name, value, low, high in (
        ("n_random", n_random, 0, MAX_RANDOM),
        ("batch_size", batch_size, 1, 2**63 - 1),
        ("random_state", random_state, 0, 2**63 - 1),
        ("max_length", max_length, 1, 2**63 - 1),
    ):
        if value is None and name in ("max_length", "n_random"):
            continue  # the store's own; enough for the modules (`random_sets_needed`)
        whole = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        if not whole or not low <= value <= high:
            top = "" if high == 2**63 - 1 else f", at most {high:,}"
            raise ConfigError(
                f"`{name}` must be {low} or a larger whole number{top}, got {shown(value)}."
            )
    if not callable(loss_fn):
        raise ConfigError(
            f"`loss_fn` must be a function of (model output, batch) giving per-sample losses, "
            f"got {shown(loss_fn)}."
        )
    check_flag_argument("progress", progress)


def _check_finite(per_sample: np.ndarray) -> None:
    """Refuse a clean loss that is NaN or Inf: every ablation's effect is then NaN, and the
    atlas said that no module hurt the loss more than random unit sets."""
    bad = ~np.isfinite(per_sample.reshape(len(per_sample), -1)).all(axis=1)
    if bad.any():
        raise NonFiniteError(
            f"The model's loss is NaN or Inf on {int(bad.sum())} of {len(per_sample)} inputs "
            f"(the first: input {int(np.argmax(bad))}) before any unit is ablated, so no "
            "ablation can be measured. Give inputs the model maps to finite outputs (no "
            "NaN/Inf values)."
        )


def label_classes(labels: Any) -> np.ndarray:
    """``[n_classes]`` the classes a loss is split by: the distinct labels, which must be
    finite numbers or strings, all of one kind (a None or NaN label is a class of no
    input: its effects were NaN, or the sort of the labels failed in a traceback)."""
    lab = np.asarray(labels)
    if lab.dtype.kind == "O":
        kinds = np.array(
            [
                "str" if isinstance(v, str) else "number" if _is_number(v) else ""
                for v in lab.ravel()
            ]
        )
        bad = (kinds == "") | (kinds != kinds[0])
        if not bad.any():
            lab = lab.astype(str if kinds[0] == "str" else np.float64)
    else:
        bad = np.zeros(lab.shape, bool) if lab.dtype.kind in "iubUSf" else np.ones(lab.shape, bool)
    if lab.dtype.kind == "f":
        bad = ~np.isfinite(lab)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        value = lab.ravel()[first]
        value = value.item() if isinstance(value, np.generic) else value
        raise ConfigError(
            f"Label {first} is {value!r}; the ablation splits its effect by label, so "
            "every label must be a finite number or a string, all of one kind. Drop that "
            "input or give it a label (--labels)."
        )
    return np.unique(lab)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _model_batches(
    model: torch.nn.Module,
    inputs: Any,
    labels: Any,
    batch_size: int,
    tokenizer: Any,
    max_length: int | None,
) -> tuple[torch.nn.Module, Iterator[InputBatch]]:
    """The module to run (an nnsight model's wrapped one) and the inputs' batches for it
    (with their labels, checked one per sample)."""
    model, tokenizer = model_and_tokenizer(model, inputs, tokenizer)
    batches = iter_input_batches(
        inputs,
        batch_size=batch_size,
        labels=labels,
        tokenizer=tokenizer,
        max_length=max_length,
        float_dtype=input_dtype(model),
        token_ids=takes_token_ids(model),  # as the capture read them (uint8 ids)
    )
    return model, batches


def check_ablation_inputs(
    model: torch.nn.Module,
    inputs: Any,
    labels: Any = None,
    *,
    loss_fn: PerSampleLoss = per_sample_cross_entropy,
    tokenizer: Any = None,
    max_length: int | None = None,
    layers: Sequence[LayerSpec] = (),
    output_index: int | str | None = None,
) -> None:
    """Refuse, before an analysis, inputs and labels its ablation would fail on after it:
    labels that are not one per input, a model that fails on the first input or whose
    loss cannot be taken there, for the cross-entropy loss a label that is no class
    index of the model's logits (all labels, against the logits of the first input), and
    a model without the store's ``layers`` (the SAE's), or of other widths there."""
    given = model  # hook names are the model's (or its nnsight wrapper's)
    model, batches = _model_batches(model, inputs, labels, 1, tokenizer, max_length)
    first = next(iter(batches), None)
    if first is None:
        raise ConfigError("The ablation's inputs are empty; give the inputs the store holds.")
    check_token_ids(model, first, "input 0")
    was_training = model.training
    model.eval()
    # checks the layers' widths (of the recorded element, `output_index`), ablates none
    ablator = Ablator(given, layers, np.zeros(0), output_index) if layers else None
    try:
        with torch.no_grad():
            try:
                output = model(*first.args, **first.kwargs)
            except AtlasError:  # raised by a hook: already says what is wrong
                raise
            except Exception as e:
                raise model_error(e, "input 0", model, first.kwargs) from e
            loss_fn(output, first)
            logits = model_logits(output)
    finally:
        if ablator is not None:
            ablator.remove()
        model.train(was_training)
    for i, batch in enumerate(batches, 1):  # ids the ablation would meet after the analysis
        check_token_ids(model, batch, f"input {i}")
    if labels is not None and np.ndim(labels) == 1:
        label_classes(labels)
    if loss_fn is per_sample_cross_entropy and labels is not None and logits.ndim == 2:
        class_indices(np.asarray(labels), int(logits.shape[1]))


def check_store_labels(store: ActivationStore, inputs: Any, labels: Any) -> None:
    """Refuse labels other than the ones ``store`` recorded for these same inputs (the
    capture's ``--labels``; compared where the inputs are the captured ones, by their
    fingerprint): the atlas's label profiles are of the store's labels, and the
    ablation's per-label table, under the same label names, split other samples, without
    a word (labels shifted by one read as the modules hurting the digit next to theirs).
    Inputs other than the captured ones (a held-out set) have labels of their own."""
    manifest = store.manifest
    job = manifest.provenance.get("job") if manifest is not None else None
    if labels is None or np.ndim(labels) != 1 or not isinstance(job, dict) or not job.get("labels"):
        return
    texts = isinstance(inputs, list) and all(isinstance(t, str) for t in inputs)
    if not (isinstance(inputs, (np.ndarray, torch.Tensor)) or texts):
        return  # an iterable's fingerprint is its type and length, not its content
    if inputs_fingerprint(inputs) != job.get("inputs"):
        return
    rows = store.rows().to_pandas()
    if "label" not in rows.columns:
        return
    stored = rows.drop_duplicates("sample").set_index("sample")["label"]
    # read by sample below: labels of fewer inputs ended in an IndexError
    labels = label_array(labels, len(inputs), "inputs")
    given = pd.Series(np.asarray(labels, dtype=object)[stored.index.to_numpy()], stored.index)
    numbers = pd.to_numeric(stored, errors="coerce") == pd.to_numeric(given, errors="coerce")
    differ = ~(numbers | (stored.astype(str) == given.astype(str)))
    # class names recorded and class indices given (the cross-entropy loss needs them) name
    # the same samples when each name has one index and each index one name
    pairs = pd.DataFrame({"s": stored.astype(str), "g": given.astype(str)}).drop_duplicates()
    named = pd.to_numeric(stored, errors="coerce").isna().all()
    if differ.any() and not (named and pairs["s"].is_unique and pairs["g"].is_unique):
        first = differ.index[differ.to_numpy()][0]
        raise ConfigError(
            f"The labels given (--labels) are not the ones the store '{store.path}' recorded "
            f"for these same inputs: {int(differ.sum())} of {len(differ)} samples differ "
            f"(sample {first}: {_plain(given[first])!r} here, {_plain(stored[first])!r} in the "
            "store). The atlas's label profiles are of the store's labels, so the ablation's "
            "per-label effects would name other samples by the same labels. Give the labels "
            "the store was captured with (or one class index per recorded class name), or "
            "capture it again with these (`capture --labels`)."
        )


def _plain(value: Any) -> Any:
    """A NumPy scalar as Python's (its repr is np.int64(3))."""
    return value.item() if isinstance(value, np.generic) else value


def check_captured_model(model: Any, store: ActivationStore, *, transfer: bool = False) -> None:
    """Refuse a model other than the one ``store`` was captured from, where its manifest
    records that one's fingerprint (``job.model``): the ablation would set another
    network's units to this store's means and measure that network's loss, under the
    atlas's modules, and a Neuronpedia export would give features another network's
    logits, without a word. ``transfer`` (`evaluate --model`): warn instead, since the
    loss recovered of an SAE spliced into another network of the same layers (a
    fine-tuned one) is a question of its own, how the SAE transfers (Kissane et al.
    2024, SAEs trained on a base model read its chat model), but never the SAE's own
    figure. A capture with a ``dtype`` cast the model it was given (in place), so the
    model is taken as given or as cast (``model_cast``). Not checked for a ``.npy`` (no
    manifest), a store from before the fingerprint was recorded, or one captured with a
    ``dtype`` before the cast model's fingerprint was recorded."""
    manifest = store.manifest
    job = manifest.provenance.get("job") if manifest is not None else None
    recorded = job.get("model") if isinstance(job, dict) else None
    if not isinstance(recorded, str):
        return
    cast = manifest.provenance.get("model_cast")
    if (job.get("settings") or {}).get("dtype") and not isinstance(cast, str):
        return
    module, _ = unwrap_model(model)  # as the capture took it (an nnsight model's module)
    details = job.get("model_details")  # recorded since December 2026
    same = not isinstance(details, str) or model_details(module) == details
    if model_fingerprint(module) in (recorded, cast) and same:
        return
    differs = (
        f"The model given (--model) is not the one the store '{store.path}' was "
        "captured from (its modules, code or weights differ from the capture's "
        f"fingerprint {recorded})"
    )
    if transfer:
        log.warning(
            "%s: the loss recovered measures how the SAE transfers to this model, not the "
            "SAE's own figure; give the captured model for that.",
            differs,
        )
        return
    raise ConfigError(
        f"{differs}; give that model, as it was when captured, on the device it was captured on."
    )


def ablation_facts(
    model: torch.nn.Module,
    inputs: Any,
    layers: Sequence[LayerSpec],
    unit_module: np.ndarray,
    values: np.ndarray,
    labels: np.ndarray | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """What the ranks of one ablation must share (each ablates its own modules, and rank
    0 puts them together): a rank given another mode ablated its modules otherwise
    without a word, and another `n_random` ended in NumPy's ValueError traceback."""

    def digest(a: Any) -> str:
        return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]

    return {
        **{f"`{k}`": v for k, v in settings.items()},
        "layers": [(l.name, l.start, l.stop) for l in layers],
        "modules": digest(unit_module),
        "values to set ablated units to": digest(values),
        "labels": None if labels is None else digest(labels),
        "model": model_fingerprint(model),
        "inputs": inputs_fingerprint(inputs),
    }


def _check_modules(unit_module: np.ndarray, n_modules: int | None, unit_mean: Any) -> None:
    """Refuse what :func:`ablate_modules` would read otherwise than meant: a module past
    ``n_modules`` (dropped without a word), a unit module below -1 (taken as none) or not
    a whole number (1.5 taken as 1), and a ``unit_mean`` of another length (an
    IndexError)."""
    if unit_module.size and unit_module.dtype.kind not in "iu":
        raise ConfigError(
            f"`unit_module` must hold module numbers (0, 1, ..., or -1 for none), got "
            f"values of dtype {unit_module.dtype}."
        )
    if (unit_module < -1).any():
        raise ConfigError(
            f"`unit_module` names {int(unit_module.min())}, not a module (0, 1, ...) or -1 (none)."
        )
    top = int(unit_module.max(initial=-1))
    if n_modules is not None and top >= n_modules:
        raise ConfigError(
            f"`unit_module` names module {top}, but `n_modules` is {n_modules}; give "
            f"`n_modules` at least {top + 1} (or leave it out)."
        )
    if unit_mean is not None and len(unit_mean) != unit_module.size:
        raise ConfigError(
            f"`unit_mean` has {len(unit_mean)} values for the {unit_module.size} units of "
            "`unit_module`; give one mean per unit."
        )


def atlas_layers(atlas: Any, store: ActivationStore) -> tuple[list[LayerSpec], np.ndarray]:
    """The Atlas's layers as specs numbered in the Atlas's unit order, and the store
    columns of its units (checked against the store)."""
    layers, cols, start = [], [], 0
    names = atlas.summary.get("layers")
    if not isinstance(names, list):  # None or absent (older atlases): a TypeError, a KeyError
        if "layer" not in atlas.units.columns:
            raise ShapeError(
                "The atlas names no layers (atlas.json's `layers`, units.parquet's `layer`), "
                "so its units cannot be found in the store; rerun `saeatlas analyze`."
            )
        names = list(dict.fromkeys(atlas.units["layer"]))  # in order (Atlas.load checks)
    counts = atlas.units["layer"].value_counts() if "layer" in atlas.units.columns else None
    for name in names:
        spec = store.layer(name)  # names the missing layer and the known ones
        if counts is not None and counts.get(name, 0) != spec.n_units:
            # two layers' names swapped by hand (atlas.json too) passed the count of all
            # units below, and each module's units were set in the other layer's columns
            raise ShapeError(
                f"The atlas names {counts.get(name, 0)} units of the layer {name!r}, but the "
                f"store '{store.path}' has {spec.n_units} in it: its units are not the "
                "store's, layer by layer (edited by hand?). Rerun `saeatlas analyze`."
            )
        layers.append(LayerSpec(name, start, start + spec.n_units, spec.shape, spec.layout))
        cols.append(np.arange(spec.start, spec.stop))
        start += spec.n_units
    if start != len(atlas.units):
        raise ShapeError(
            f"The atlas has {len(atlas.units)} units but its layers {names} "
            f"have {start} in the store '{store.path}'. Give the store the atlas was made from."
        )
    return layers, np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
