"""Hooks that record modules' outputs: the ``Recorder``, one forward pass run with
it, and the ``capture`` context manager.

Forward hooks (or pre-hooks for ``:input``) record the chosen modules; with
``stop_when_done`` the forward pass stops as soon as every chosen module has run
(``early_stop``). Hooks are removed in ``finally``, even when the forward pass
fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..errors import AtlasError, InputsError, ModelError, ShapeError
from .hookpoints import Hookpoint, resolve_hookpoints
from .inputs import InputBatch
from .models import code_failure
from .outputs import select_tensor
from .positions import position_table
from .transformer_lens import setting_hint


class StopForward(BaseException):
    """Raised by the last hook to end a forward pass early (BaseException, so that
    libraries' ``except Exception`` wrappers let it through)."""


class Recorder:
    """Hooks that record one value per hook point and forward call."""

    def __init__(
        self,
        hookpoints: Sequence[Hookpoint],
        convert: Callable[[str, torch.Tensor], Any],
        output_index: int | str | None = None,
        stop_when_done: bool = False,
        once: bool = False,
    ) -> None:
        self.hookpoints = list(hookpoints)
        self.convert = convert
        self.output_index = output_index
        self.stop_when_done = stop_when_done
        self.once = (
            once  # a module that runs twice in one pass is an error, else the last call wins
        )
        self.converts = {hp.name: hp.convert for hp in self.hookpoints if hp.convert is not None}
        self.values: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.plain: set[str] = set()
        """Hook points whose output was a plain tensor (``output_index`` has no effect)."""
        self.handles: list[Any] = []

    def attach(self) -> None:
        for hp in self.hookpoints:
            if hp.record_input:
                fn = self._pre_hook(hp.name)
                self.handles.append(hp.module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                self.handles.append(hp.module.register_forward_hook(self._hook(hp.name)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _record(self, name: str, value: Any) -> None:
        if name in self.values and self.once:
            raise ran_twice(name)
        if isinstance(value, torch.Tensor):
            self.plain.add(name)
        t = select_tensor(value, name, self.output_index)
        convert = self.converts.get(name)
        if convert is not None:  # TransformerLens hooks that reshape (hook_z: heads)
            t = convert(t)
        self.shapes[name] = tuple(t.shape)
        self.values[name] = self.convert(name, t)
        if self.stop_when_done and len(self.values) == len(self.hookpoints):
            raise StopForward

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self._record(name, output)

        return hook

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._record(name, args if args else kwargs)

        return hook


def ran_twice(name: str) -> ShapeError:
    """The error for a recorded (or spliced, or ablated) module that ran more than once
    in one forward pass: its rows are of one call, and putting them back into each call
    measures (or ablates) another layer than the one stored."""
    return ShapeError(
        f"Module '{name}' ran more than once in one forward pass; saeatlas records one "
        "call per module. Choose a module that runs once, one that holds it (not a "
        "ModuleList, which never runs; a shared layer's group may run as often, as "
        "ALBERT's do): `saeatlas layers MODEL` marks each module that runs more than once."
    )


@contextmanager
def capture(
    model: torch.nn.Module,
    hookpoints: Sequence[str] | str,
    *,
    output_index: int | str | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the chosen modules' outputs during forward passes run inside the block.

    ``with capture(model, ["layers.*.mlp"]) as acts: model(x)`` leaves in
    ``acts`` a detached copy of each module's output from the last call.
    """
    recorder = Recorder(
        resolve_hookpoints(model, hookpoints),
        lambda name, t: t.detach().clone(),
        output_index=output_index,
    )
    recorder.attach()
    try:
        yield recorder.values
    finally:
        recorder.detach()


def check_batch_follows(
    model: torch.nn.Module,
    batch: InputBatch,
    recorder: Recorder,
    device: str | None,
    where: str,
) -> None:
    """Layers whose ``[a, b, d]`` output has ``a == b ==`` the batch size (``[seq, batch,
    d]`` with ``seq == batch``, as ``nn.LSTM`` without ``batch_first`` gives) cannot be
    told from ``[batch, seq, d]`` by their shape: the batch runs again without its last
    sample, and the first dimension must shrink with it, else the layer is an error (its
    rows would be given to the wrong samples). Call with ``recorder.shapes`` from
    ``batch``'s own pass; the recorder is detached while this pass runs."""
    n = batch.n_samples
    unclear = [k for k, s in recorder.shapes.items() if len(s) == 3 and s[0] == s[1] == n >= 2]
    if not unclear:
        return
    args, kwargs = _drop_last(batch.args, n), _drop_last(batch.kwargs, n)
    shorter = InputBatch(args, kwargs, n - 1)
    probe = Recorder(
        [hp for hp in recorder.hookpoints if hp.name in unclear],
        lambda name, t: None,
        recorder.output_index,
        stop_when_done=True,
    )
    recorder.detach()
    probe.attach()
    try:
        run_forward(model, shorter, probe, device, f"{where}, run again without its last sample")
    finally:
        probe.detach()
        recorder.attach()
    for name in unclear:
        if probe.shapes[name][0] != n - 1:
            raise ShapeError(
                f"Layer '{name}' gives shape {list(recorder.shapes[name])} for a batch of {n} "
                f"samples and {list(probe.shapes[name])} for {n - 1}: its first dimension is "
                "not the batch ([seq, batch, d], as nn.LSTM/GRU/Transformer modules give "
                "without batch_first=True). saeatlas records batch-first tensors; choose a "
                "layer whose first dimension is the batch, or build the module with "
                "batch_first=True."
            )


def _drop_last(x: Any, n: int) -> Any:
    """``x`` with every tensor or array whose first dimension is ``n`` cut to ``n - 1``."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return x[: n - 1] if x.ndim and x.shape[0] == n else x
    if isinstance(x, dict):
        return {k: _drop_last(v, n) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_drop_last(v, n) for v in x)
    return x


#: What to check when a forward pass fails, naming the flags of the commands that run
#: the inputs through in batches (capture, the ablation, `evaluate --model`).
FIT_ADVICE = (
    "shape, dtype, token ids; --max-length for texts longer than it takes; a smaller "
    "--batch-size when out of memory"
)


def model_error(
    e: BaseException,
    where: str,
    model: Any = None,
    kwargs: Any = None,
    fit: str = FIT_ADVICE,
) -> ModelError:
    """The one-line error for a forward pass that failed inside the model (``model`` and
    the forward call's ``kwargs``, where given, name what the model lacked); ``fit``: what
    to check, in the words of the command that ran it."""
    hint = ""
    if "'indices' to have one of the following scalar types" in str(e):
        # an nn.Embedding given uint8/int8/int16 ids by a model saeatlas cannot tell embeds
        # tokens (not a Hugging Face one), which are widened to int64 for it
        hint = " The model embeds token ids: save them as int64 (`ids.astype(np.int64)`)."
    given = kwargs if isinstance(kwargs, Mapping) else {}
    taken = [k for k in ("label", "labels") if f"unexpected keyword argument '{k}'" in str(e)]
    if taken and taken[0] in given:  # a data set's column, which the forward takes not
        hint = (
            f" Every key of a dict batch goes to the forward call, `{taken[0]}` too: give "
            f"the labels apart, as `(dict, y)` batches (the dict without `{taken[0]}`), and "
            "they are stored as labels."
        )
    if lacks_decoder_inputs(model, kwargs):
        # T5, Whisper: transformers' words ("exactly one of input_ids or inputs_embeds")
        # are of the decoder's inputs, which texts and arrays do not give
        hint = (
            f" {type(model).__name__} is an encoder-decoder model, and its decoder needs "
            "`decoder_input_ids`, which texts and arrays do not give. Record its encoder as a "
            "model of its own (a factory returning `model.get_encoder()`, or T5EncoderModel), "
            "or from Python give dict batches that hold `decoder_input_ids`."
        )
    return ModelError(
        f"The model's forward pass failed on {where}: {code_failure(e)}.{hint} Check that the "
        f"inputs fit the model ({fit}); `saeatlas --debug ...` shows the traceback."
    )


def lacks_decoder_inputs(model: Any, kwargs: Any) -> bool:
    """Whether ``model`` is an encoder-decoder given no decoder tokens in ``kwargs`` (the
    forward call's keyword inputs; anything else gives none), so its decoder cannot run.
    `labels` give them too (T5 and BART shift them right): a failure of their decoder was
    told to need `decoder_input_ids`, and `saeatlas layers` listed its encoder alone."""
    given = kwargs if isinstance(kwargs, Mapping) else {}
    return getattr(getattr(model, "config", None), "is_encoder_decoder", False) is True and not any(
        k.startswith("decoder_input") or k == "labels" for k in given
    )


def _move(x: Any, device: str | None) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device) if device is not None else x
    if isinstance(x, dict):
        return {k: _move(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_move(v, device) for v in x)
    return x


def own_copy(x: Any) -> Any:
    """``x`` (a batch's args or kwargs) with each tensor copied, for one of several passes
    over one batch: a model that changes its inputs in place (``x.mul_(2)``) then sees the
    batch as given in every pass. The loss recovered and the ablation, which run each
    batch again and again, measured their later passes on inputs the earlier ones had
    changed (a fraction recovered of 0.68 for a worse reconstruction than none), and
    changed the caller's own tensors with them, without a word."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, dict):
        return {k: own_copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(own_copy(v) for v in x)
    return x


def check_token_ids(model: torch.nn.Module, batch: InputBatch, where: str) -> None:
    """Refuse token ids outside a Hugging Face model's input embedding before the pass
    (on the host): on a GPU they end in CUDA's 'device-side assert triggered', which
    names nothing and leaves the device unusable; on a CPU in 'index out of range'. So
    are `token_type_ids` outside its table of token types (BERT's two segments)."""
    try:
        n = model.get_input_embeddings().num_embeddings  # type: ignore[operator, union-attr]
    except Exception:  # not a Hugging Face model, or one without an embedding table
        return
    _check_token_types(model, batch.kwargs.get("token_type_ids"), where)
    ids = batch.kwargs.get("input_ids", batch.args[0] if batch.args else None)
    if not isinstance(n, int) or not isinstance(ids, torch.Tensor) or ids.numel() == 0:
        return
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= n:
        raise InputsError(
            f"Token ids of {where} run from {lo} to {hi}, but the model's input embedding "
            f"has {n} entries (ids 0 to {n - 1}). Give ids of this model's vocabulary (its "
            "own tokenizer, not another model's)."
        )
    key, limit = position_table(model)
    if ids.ndim >= 2 and limit is not None and ids.shape[-1] > limit:
        given = getattr(model.config, key)  # type: ignore[union-attr]
        less = f" {given}, less the rows before its first position" if given != limit else ""
        raise InputsError(
            f"{where[0].upper()}{where[1:]} holds sequences of {ids.shape[-1]} tokens, but the "
            f"model has {limit} positions (its config's `{key}`{less}). Cut them to at most "
            f"{limit} tokens: --max-length {limit} (`max_length`), for texts and token ids."
        )


def _check_token_types(model: torch.nn.Module, types: Any, where: str) -> None:
    """Refuse ``types`` (a dict batch's ``token_type_ids``) outside the model's table of
    token types, which ended in "index out of range in self" (a device-side assert on a
    GPU), naming nothing."""
    base = getattr(model, "base_model", model)
    table = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
    if not isinstance(table, torch.nn.Embedding) or not isinstance(types, torch.Tensor):
        return
    if types.numel() == 0 or types.is_floating_point() or types.dtype == torch.bool:
        return
    lo, hi, n = int(types.min()), int(types.max()), table.num_embeddings
    if lo < 0 or hi >= n:
        raise InputsError(
            f"`token_type_ids` of {where} run from {lo} to {hi}, but the model has {n} token "
            f"types (0 to {n - 1}, its config's `type_vocab_size`). Give the segment ids its "
            "tokenizer gives (0 for the first text, 1 for a second)."
        )


def run_forward(
    model: torch.nn.Module,
    batch: InputBatch,
    recorder: Recorder,
    device: str | None,
    where: str,
    probe: bool = False,
) -> None:
    """One forward pass of ``batch`` on ``device``, recorded by the attached ``recorder``;
    ``where`` names the batch in errors.

    ``probe``: the pass runs whole although the capture stops early (the recorder's
    ``stop_when_done`` is off for it), so that a recorded module that runs again after
    the last recorded one (a layer shared across depths, as in ALBERT) is found on the
    first batch; a failure of the model after every recorded module ran is then not
    an error, since stopping early never reaches it."""
    recorder.values.clear()
    check_token_ids(model, batch, where)
    try:
        model(*_move(batch.args, device), **_move(batch.kwargs, device))
    except StopForward:
        pass
    except AtlasError:  # raised by a hook: already says what is wrong
        raise
    except (Exception, SystemExit) as e:  # sys.exit(0) ended the run with exit code 0
        if not (probe and len(recorder.values) == len(recorder.hookpoints)):
            raise model_error(e, where, model, batch.kwargs) from e
    missing = [hp.name for hp in recorder.hookpoints if hp.name not in recorder.values]
    if missing:
        raise ShapeError(
            f"Modules {missing} did not run during the forward pass, so nothing was recorded for "
            "them. Choose modules that the model's forward uses." + setting_hint(model, missing)
        )
