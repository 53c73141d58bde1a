"""Downstream loss recovered: splice an SAE's reconstruction back into the model.

For each batch, three forward passes: clean (recording the SAE's layers),
with each layer's output replaced by its reconstruction, and with it zeroed.
The fraction of loss recovered is ``(L_zero - L_sae) / (L_zero - L_clean)``:
1 when the reconstruction is as good as the real activations, 0 when it is
no better than deleting them (as in Bricken et al. 2023 and Gao et al. 2024).
A joint multi-layer SAE reads all its layers from the clean pass and writes
every layer's reconstruction at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch

from .._validation import check_device, choice, shown
from ..capture.hookpoints import resolve_hookpoints
from ..capture.inputs import iter_input_batches, model_and_tokenizer
from ..capture.layouts import SOURCE_LAYOUT
from ..capture.masks import layer_masks
from ..capture.models import input_dtype, takes_token_ids
from ..capture.outputs import replace_tensor, select_tensor
from ..capture.recorder import check_token_ids, model_error, own_copy, ran_twice
from ..capture.rows import SPATIAL_MODES, from_rows, to_rows
from ..errors import AtlasError, ConfigError, InputsError, NonFiniteError
from ..losses import LOSSES, PerSampleLoss, loss_function, per_sample_cross_entropy
from ..sae import SparseAutoencoder
from ..sae.formats import saelens_hook_name
from ..sae.model import check_loaded_sae


@dataclass(frozen=True)
class DownstreamResult:
    loss_clean: float
    loss_sae: float
    loss_zero: float
    fraction_recovered: float
    """``(loss_zero - loss_sae) / (loss_zero - loss_clean)``; NaN when zeroing the layers
    does not raise the loss beyond float rounding (``loss_zero - loss_clean`` at most 1e-5
    of the losses): there is no loss to recover."""
    n_samples: int

    def table_rows(self) -> list[tuple[str, str]]:
        """``(name, value)`` of each figure as ``saeatlas evaluate --model`` prints it."""
        rows = [("loss_inputs", f"{self.n_samples:,}")]
        for key in ("loss_clean", "loss_sae", "loss_zero", "fraction_recovered"):
            value = getattr(self, key)
            rows.append((key, "undefined" if math.isnan(value) else f"{value:.4f}"))
        return rows

    def note(self) -> str | None:
        """Why the fraction recovered is undefined, or None."""
        if not math.isnan(self.fraction_recovered):
            return None
        return (
            "The fraction recovered is undefined: zeroing the SAE's layers does not raise the "
            "model's loss beyond float rounding on these inputs (loss_zero "
            f"{self.loss_zero:.4f}, loss_clean {self.loss_clean:.4f}), so there is no loss for "
            "the reconstruction to recover. Measure it on inputs (and labels) the model does well on."
        )


@torch.no_grad()
def loss_recovered(
    sae: SparseAutoencoder,
    model: torch.nn.Module,
    inputs: Any,
    loss_fn: PerSampleLoss = per_sample_cross_entropy,
    *,
    labels: Any = None,
    tokenizer: Any = None,
    max_length: int | None = None,
    batch_size: int = 64,
    spatial: str = "positions",
    output_index: int | str | None = None,
    device: str | None = None,
) -> DownstreamResult:
    """Fraction of the model's loss that the SAE's reconstruction recovers.

    The SAE's ``cfg.layers`` name the hook points it was trained on; the other
    arguments describe the inputs as for capture (texts cut to ``max_length``
    tokens: give the capture's, so the model sees what the SAE was trained on). ``loss_fn`` gives per-sample
    losses (:mod:`saeatlas.losses`: a classifier's cross-entropy against ``labels``,
    or a causal LM's next-token loss), averaged over samples.
    """
    loss_fn = _check_arguments(sae, loss_fn, batch_size, spatial, device)
    # layer -> (stored layout, width); an SAE from SAELens names its hook point instead
    # (`hook_name`), whose rows are what the hook gives (its heads flattened, as
    # SAELens's `hook_z` reshape does): it was refused as "no layer map"
    layers = {l.name: (l.layout, l.n_units) for l in sae.cfg.layers}
    hook = saelens_hook_name(sae.cfg)
    if not layers and hook is not None:
        layers = {hook: (None, sae.cfg.d_in)}
    if not layers:
        raise ConfigError(
            "The SAE has no layer map and names no hook point (SAELens's `hook_name`), so "
            "where to splice it is unknown; train it on a store of the model's layers."
        )
    pooled = [name for name, (layout, _) in layers.items() if layout == "pooled"]
    if pooled:  # its rows were read per position and ended in torch.cat's traceback
        raise ConfigError(
            f"Layer '{pooled[0]}' was stored pooled, one row per sample (--spatial mean): its "
            "reconstruction is no conv map to put back into the layer, so the loss it "
            "recovers cannot be measured. Capture the layer with --spatial positions "
            "(`spatial='positions'`) for that."
        )
    names = list(layers)
    hps = {hp.name: hp for hp in resolve_hookpoints(model, names)}
    model, tokenizer = model_and_tokenizer(model, inputs, tokenizer)
    if any(hp.record_input for hp in hps.values()):
        raise ConfigError("Splicing into a module's :input is not supported; use its output.")
    layouts = {name: layout for name, (layout, _) in layers.items()}
    sae = sae.eval()
    was_training = model.training
    model.eval()
    mode: dict[str, Any] = {"kind": "record", "rows": {}, "masks": {}}

    def hook_for(name: str):
        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            hp = hps[name]
            raw = select_tensor(output, name, output_index)
            t = hp.convert(raw) if hp.convert is not None else raw  # TransformerLens's view
            if mode["kind"] == "record":
                if name in mode["rows"]:  # every call was given the last one's reconstruction
                    raise ran_twice(name)
                given = layouts[name]
                layout = SOURCE_LAYOUT.get(given) if given is not None else hp.layout
                rows = to_rows(t, name, mask=mode["masks"][name], spatial=spatial, layout=layout)
                layouts[name] = given or rows.layout  # a hook point's: as the rows came
                mode["rows"][name] = rows.x
                return None
            new = mode["replace"][name]
            if new is None:
                return replace_tensor(output, torch.zeros_like(raw), output_index)
            rebuilt = from_rows(t, new, name, layouts[name], mode["masks"][name])
            if hp.revert is not None:
                rebuilt = hp.revert(rebuilt)
            return replace_tensor(output, rebuilt, output_index)

        return hook

    # first among the module's hooks (`prepend`), so that the model's own see what is put
    # back: transformers 5 gathers `hidden_states` by hooks, installed at a model's first
    # pass, and a LLaVA's projector, reading its vision layers so, never saw the splice
    # into a model that had run before (loss_sae equal to loss_clean, without a word)
    handles = [hp.module.register_forward_hook(hook_for(n), prepend=True) for n, hp in hps.items()]
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n = 0
    try:
        if device is not None:
            model.to(device)
            sae.to(device)
        for batch in iter_input_batches(
            inputs,
            batch_size=batch_size,
            tokenizer=tokenizer,
            labels=labels,
            max_length=max_length,
            float_dtype=input_dtype(model),
            token_ids=takes_token_ids(model),
        ):
            args = tuple(a.to(device) if device and torch.is_tensor(a) else a for a in batch.args)
            kwargs = {
                k: v.to(device) if device and torch.is_tensor(v) else v
                for k, v in batch.kwargs.items()
            }
            where = f"inputs {n}..{n + batch.n_samples - 1}"
            mode.update(kind="record", rows={}, masks=layer_masks(model, hps.values(), batch))
            check_token_ids(model, batch, where)  # as the capture does: a GPU's device assert
            # the first pass meets the inputs: a misfit is the user's, in one line
            clean = _forward(model, args, kwargs, where)
            totals["clean"] += _total(loss_fn(clean, batch), batch.n_samples, n, "")
            x = torch.cat([mode["rows"][name] for name in names], dim=1)
            x_hat = sae(x.to(sae.W_enc)).x_hat
            parts = torch.split(x_hat, [width for _, width in layers.values()], dim=1)
            mode.update(kind="replace", replace=dict(zip(names, parts)))
            # the model's own code may refuse what is put in its layers' place (a check
            # that they are not negative): one line naming the pass, not its traceback
            spliced = " with the SAE's reconstruction"
            out = _forward(model, args, kwargs, where + spliced + " in the layers' place")
            totals["sae"] += _total(loss_fn(out, batch), batch.n_samples, n, spliced)
            mode.update(replace=dict.fromkeys(names))
            out = _forward(model, args, kwargs, where + " with the layers zeroed")
            totals["zero"] += _total(
                loss_fn(out, batch), batch.n_samples, n, " with the layers zeroed"
            )
            n += batch.n_samples
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:  # a loss of 0 and a fraction of NaN, without a word
        raise InputsError("The inputs hold no samples, so there is no loss to measure.")
    clean, with_sae, zero = (totals[k] / n for k in ("clean", "sae", "zero"))
    gap = zero - clean
    # a gap of 0 or below (zeroing the layers does not raise the loss) leaves nothing to
    # recover: the ratio of two negatives read 1.21 for a reconstruction worse than both
    # and a gap within float32's rounding of the losses (a layer the loss hardly reads:
    # 8e-8 of a loss of 1) is no loss to recover either: it read 2.0, or -3, of noise
    floor = 1e-5 * max(abs(clean), abs(zero), 1e-7)
    fraction = (zero - with_sae) / gap if gap > floor else float("nan")
    return DownstreamResult(clean, with_sae, zero, fraction, n)


def _forward(model: torch.nn.Module, args: tuple, kwargs: dict, where: str) -> Any:
    """``model(*args, **kwargs)``; a failure in the model's own code is one line naming
    the inputs and the pass (``where``), a hook's error stays as it is."""
    try:
        return model(*own_copy(args), **own_copy(kwargs))  # a model may change them in place
    except AtlasError:  # raised by a hook: already says what is wrong
        raise
    except Exception as e:
        raise model_error(e, where, model, kwargs) from e


def _check_arguments(
    sae: Any, loss_fn: Any, batch_size: Any, spatial: Any, device: Any
) -> PerSampleLoss:
    """The loss function (a name of :data:`~saeatlas.losses.LOSSES` too), after checking
    the arguments a caller from Python can get wrong: a path for the SAE ended in an
    AttributeError, a loss's name, a batch size of "64" or 2.5 and a device of 'bogus' in
    TypeErrors and torch's RuntimeError, a batch size of True was read as 1, and an
    unknown `spatial` was passed over."""
    check_loaded_sae(sae)
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral):
        raise ConfigError(
            f"`batch_size` must be a whole number of inputs, got {shown(batch_size)}."
        )
    choice("spatial", spatial, SPATIAL_MODES)
    if device is not None:
        check_device("device", device)
    if isinstance(loss_fn, str):  # the CLI's --loss names
        return loss_function(loss_fn)
    if not callable(loss_fn):
        raise ConfigError(
            f"`loss_fn` must be a per-sample loss (a function of the model's output and the "
            f"batch) or the name of one ({list(LOSSES)}), got {shown(loss_fn)}."
        )
    return loss_fn


def _total(loss: torch.Tensor, n_samples: int, first: int, spliced: str) -> float:
    """The batch's summed loss from per-sample losses (or from their mean); a NaN/Inf
    loss is refused, naming the input (one NaN made every loss and the fraction
    recovered NaN without a word). ``first``: the batch's first input; ``spliced``:
    what the pass changed in the model ("" for the clean pass)."""
    bad = ~torch.isfinite(loss.detach().reshape(n_samples, -1) if loss.dim() else loss)
    if bad.any():
        which = (
            f"input {first + int(bad.reshape(n_samples, -1).any(dim=1).float().argmax())}"
            if loss.dim()
            else f"inputs {first}..{first + n_samples - 1}"
        )
        why = (
            "Give inputs the model maps to finite outputs (no NaN/Inf values)."
            if not spliced
            else "The SAE's reconstruction drives the model out of range there; check the "
            "SAE against the model it was trained on (`saeatlas evaluate` without --model)."
        )
        raise NonFiniteError(f"The model's loss{spliced} is NaN or Inf on {which}. {why}")
    return float(loss.sum()) if loss.dim() else float(loss) * n_samples
