"""Recording activations: the ``capture`` context manager and ``capture_activations``.

Forward hooks (or pre-hooks for ``:input``) record the chosen modules; the
forward pass runs in eval mode without gradients and stops as soon as every
chosen module has run (``early_stop``). Hooks are removed in ``finally``, even
when the forward pass fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .._progress import progress_bar
from .._validation import check_device, check_types, choice, positive
from ..errors import AtlasError, ConfigError, ModelError, NonFiniteError, ShapeError
from ..store import ActivationStore, LayerSpec, StoreWriter
from ..store.shards import STORE_DTYPES
from ..store.store import NONFINITE_MODES
from .distributed import Coordinator, capture_world, count_batches, rank_device, share
from .hookpoints import Hookpoint, resolve_hookpoints
from .inputs import InputBatch, iter_input_batches
from .job import batch_fingerprint, capture_job
from .layouts import LayoutTracer, choose_layout, module_layout, parse_layout
from .models import input_dtype
from .nnsight import unwrap_model
from .rows import (
    SPATIAL_MODES,
    LayerRows,
    check_batch_dim,
    check_row_agreement,
    select_tensor,
    to_rows,
)
from .transformer_lens import TransformerLensTexts, is_transformer_lens
from .transformer_lens import provenance as tl_provenance

log = logging.getLogger(__name__)

#: A tokenizer ``model_max_length`` above this sets no limit (transformers' is int(1e30)).
TOKENIZER_NO_LIMIT = 100_000


@dataclass(frozen=True)
class CaptureConfig:
    """How activations are recorded and stored."""

    batch_size: int = 32
    """Samples per forward pass (for array and text inputs)."""
    spatial: str = "positions"
    """Conv maps ``[batch, C, H, W]``: ``positions`` (a row per position) or ``mean`` (pooled)."""
    output_index: int | str | None = None
    """Which element of a tuple/dict output to record; the first tensor by default."""
    device: str | None = None
    """Device to run the model on (``cpu``, ``cuda``...); the model's own by default."""
    dtype: str | None = None
    """Dtype to run the model in (``float32``, ``float16``, ``bfloat16``); unchanged by default."""
    store_dtype: str = "float32"
    """Dtype of the stored activations."""
    shard_rows: int | None = None
    """Rows per shard; about 64 MiB per shard by default."""
    on_nonfinite: str = "error"
    """NaN/Inf in a row: ``error`` (stop and say where) or ``skip`` (drop the row, count it)."""
    max_length: int | None = None
    """Truncate texts to this many tokens; by default the tokenizer's limit, or the model's
    positions (its config's) when the tokenizer sets none."""
    early_stop: bool = True
    """Stop each forward pass once every recorded module has run."""
    layout: str | None = None
    """What the axes of 4-D outputs are when neither their module nor their hook name
    says: ``image`` [batch, C, H, W], ``heads`` [batch, pos, head, d_head] or ``pattern``
    [batch, head, q_pos, k_pos]; ``LAYER=LAYOUT`` (comma-separated) for some layers."""
    timeout_s: float = 1800.0
    """Under torchrun: seconds a rank waits for the others where they meet (opening the
    store, the end of each rank's share) before it stops with an error."""

    def __post_init__(self) -> None:
        check_types(self)
        positive(self, "batch_size", "shard_rows", "max_length", "timeout_s")
        choice("spatial", self.spatial, SPATIAL_MODES)
        choice("on_nonfinite", self.on_nonfinite, NONFINITE_MODES)
        choice("store_dtype", self.store_dtype, STORE_DTYPES)
        if self.dtype is not None:
            choice("dtype", self.dtype, STORE_DTYPES)
        check_device("device", self.device, flag="--device")
        parse_layout(self.layout)


class _StopForward(BaseException):
    """Raised by the last hook to end a forward pass early (BaseException, so that
    libraries' ``except Exception`` wrappers let it through)."""


class _Recorder:
    """Hooks that record one value per hook point and forward call."""

    def __init__(
        self,
        hookpoints: Sequence[Hookpoint],
        convert: Callable[[str, torch.Tensor], Any],
        output_index: int | str | None = None,
        stop_when_done: bool = False,
    ) -> None:
        self.hookpoints = list(hookpoints)
        self.convert = convert
        self.output_index = output_index
        self.stop_when_done = stop_when_done
        self.converts = {hp.name: hp.convert for hp in self.hookpoints if hp.convert is not None}
        self.values: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
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
        if name in self.values and self.stop_when_done:
            raise ShapeError(
                f"Module '{name}' ran more than once in one forward pass; saeatlas records one "
                "call per module. Choose a module that runs once (or its parent)."
            )
        t = select_tensor(value, name, self.output_index)
        convert = self.converts.get(name)
        if convert is not None:  # TransformerLens hooks that reshape (hook_z: heads)
            t = convert(t)
        self.shapes[name] = tuple(t.shape)
        self.values[name] = self.convert(name, t)
        if self.stop_when_done and len(self.values) == len(self.hookpoints):
            raise _StopForward

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self._record(name, output)

        return hook

    def _pre_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._record(name, args if args else kwargs)

        return hook


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
    recorder = _Recorder(
        resolve_hookpoints(model, hookpoints),
        lambda name, t: t.detach().clone(),
        output_index=output_index,
    )
    recorder.attach()
    try:
        yield recorder.values
    finally:
        recorder.detach()


def model_error(e: Exception, where: str) -> ModelError:
    """The one-line error for a forward pass that failed inside the model."""
    return ModelError(
        f"The model's forward pass failed on {where}: {type(e).__name__}: "
        f"{str(e).strip().rstrip('.')}. Check that the "
        "inputs fit the model (shape, dtype, token ids; --max-length for texts longer than it "
        "takes; a smaller --batch-size when out of memory); `saeatlas --debug ...` shows the "
        "traceback."
    )


def _move(x: Any, device: str | None) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device) if device is not None else x
    if isinstance(x, dict):
        return {k: _move(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_move(v, device) for v in x)
    return x


def _forward(
    model: torch.nn.Module, batch: InputBatch, recorder: _Recorder, device: str | None, where: str
) -> None:
    recorder.values.clear()
    try:
        model(*_move(batch.args, device), **_move(batch.kwargs, device))
    except _StopForward:
        pass
    except AtlasError:  # raised by a hook: already says what is wrong
        raise
    except Exception as e:
        raise model_error(e, where) from e
    missing = [hp.name for hp in recorder.hookpoints if hp.name not in recorder.values]
    if missing:
        raise ShapeError(
            f"Modules {missing} did not run during the forward pass, so nothing was recorded for "
            "them. Choose modules that the model's forward uses."
        )


def _row_meta(batch: InputBatch, rows: LayerRows, sample_base: int) -> dict[str, np.ndarray]:
    local = rows.sample.numpy()
    position = rows.position.numpy()
    meta: dict[str, np.ndarray] = {
        "sample": (local + sample_base).astype(np.int64),
        "position": position.astype(np.int64),
    }
    if batch.labels is not None:
        meta["label"] = np.asarray(batch.labels)[local]
    if batch.texts is not None:
        meta["text"] = np.array([batch.texts[i] for i in local], dtype=object)
    if batch.tokens is not None:
        meta["token"] = np.array(
            [batch.tokens[i][p] for i, p in zip(local, position)], dtype=object
        )
    return meta


def capture_activations(
    model: torch.nn.Module,
    inputs: Any,
    hookpoints: Sequence[str] | str,
    out: str | Path,
    config: CaptureConfig = CaptureConfig(),
    *,
    tokenizer: Any = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
) -> ActivationStore:
    """Run ``model`` over ``inputs`` and store the chosen layers' activations at ``out``.

    Args:
        model: any ``torch.nn.Module`` (plain, Hugging Face, Keras 3 on torch,
            TransformerLens), or an nnsight ``NNsight``/``LanguageModel`` wrapper.
        inputs: tensor/array, list of texts (with ``tokenizer``) or iterable of batches.
        hookpoints: layer names, globs or ``re:`` regexes, optionally with ``:input``.
        out: the store directory to write.
        config: capture options.
        tokenizer: a Hugging Face tokenizer, for text inputs.
        labels: one label per sample, stored in ``rows.parquet``.
        resume: continue an interrupted capture at ``out`` (same inputs, same options).
        overwrite: replace whatever store is at ``out``.
        progress: show a progress bar.
        provenance: extra facts for the manifest.

    Returns:
        The finished store, opened.

    Under ``torchrun`` (or any initialised process group) every rank calls this with
    the same arguments: each runs the model on its own contiguous share of the input
    batches and writes its own shards, and rank 0 merges them into one store equal to
    the one a single process writes (:mod:`saeatlas.capture.distributed`).
    """
    coord = capture_world(config.device, config.timeout_s)
    try:
        return _capture(
            coord,
            model,
            inputs,
            hookpoints,
            out,
            config,
            tokenizer=tokenizer,
            labels=labels,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            provenance=provenance,
        )
    finally:
        coord.close()


def _capture(
    coord: Coordinator,
    model: torch.nn.Module,
    inputs: Any,
    hookpoints: Sequence[str] | str,
    out: str | Path,
    config: CaptureConfig,
    *,
    tokenizer: Any,
    labels: Sequence[Any] | np.ndarray | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
    provenance: dict[str, Any] | None,
) -> ActivationStore:
    """:func:`capture_activations` among the ranks of ``coord``."""
    world = coord.world
    device = rank_device(config.device, world)
    progress = progress and world.is_main
    hps = resolve_hookpoints(model, hookpoints)
    model, own_tokenizer = unwrap_model(model)  # nnsight: run the wrapped module
    tokenizer = tokenizer if tokenizer is not None else own_tokenizer
    tl_facts: dict[str, Any] = {}
    if is_transformer_lens(model):
        tl_facts = tl_provenance(model)
        if _is_texts(inputs):
            tokenizer = TransformerLensTexts(model)
    max_length = _max_length(model, inputs, tokenizer, config.max_length)
    job = capture_job(model, inputs, [hp.name for hp in hps], config, labels)
    dtype = STORE_DTYPES[config.dtype] if config.dtype else None
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    prov = {
        "model": type(model).__name__,
        "hookpoints": list(hookpoints) if not isinstance(hookpoints, str) else [hookpoints],
        "inputs": type(inputs).__name__,
        "saeatlas_version": __version__,
        "torch_version": torch.__version__,
        **({"max_length": max_length} if max_length is not None else {}),
        **tl_facts,
        **(provenance or {}),
    }
    if coord.distributed:
        coord.agree(job)
        lo, hi = share(count_batches(inputs, config.batch_size), world)
        prov["world_size"] = world.size
    else:
        lo, hi = 0, None
    writer = _open_writer(
        coord,
        lambda: StoreWriter(
            out,
            dtype=config.store_dtype,
            shard_rows=config.shard_rows,
            resume=resume,
            overwrite=overwrite,
            provenance=prov,
            job=job,
            rank=world.rank,
            world=world.size,
        ),
    )
    coord.watch(writer.work)
    point = writer.resume_point
    # Rows are made inside the hook: a copy taken there cannot be changed by the
    # model's later in-place ops (ReLU(inplace=True) after a hooked layer).
    current: dict[str, Any] = {"mask": None}
    layouts = {hp.name: choose_layout(hp.name, _known_layout(hp), config.layout) for hp in hps}
    default_layout, _ = parse_layout(config.layout)
    tracer = LayoutTracer(model)

    def rows_of(name: str, t: torch.Tensor) -> LayerRows:
        if layouts[name] is None and t.ndim == 4:  # fixed once, on the first batch
            layouts[name] = tracer.lookup(t) or default_layout
        return to_rows(
            t, name, mask=current["mask"], spatial=config.spatial, layout=layouts[name]
        )

    recorder = _Recorder(hps, rows_of, config.output_index, stop_when_done=config.early_stop)
    total = _count_samples(inputs) if not coord.distributed else None
    was_training = model.training
    model.eval()
    try:
        if any(layout is None for layout in layouts.values()):  # a 4-D output may need tracing
            tracer.attach()  # before the recorder: a module's hooks run in the order they were added
        recorder.attach()
        with torch.no_grad(), progress_bar("capture", total, progress) as bar:
            sample_base, share_base, started = 0, 0, False
            batches = iter_input_batches(
                inputs,
                batch_size=config.batch_size,
                tokenizer=tokenizer,
                labels=labels,
                max_length=max_length,
                float_dtype=input_dtype(model),
            )
            for g, batch in enumerate(batches):
                if g == 0:
                    _check_first_batch(writer, batch, out)
                if hi is not None and g >= hi:
                    break
                if g < lo:  # another rank's: count its samples
                    sample_base += batch.n_samples
                    continue
                coord.poll()
                if g == lo:
                    share_base = sample_base
                b = g - lo  # this rank's (and the writer's) count of batches
                if b < point.batches_done:
                    sample_base += batch.n_samples
                    bar.advance(batch.n_samples)
                    continue
                if b == point.batches_done and sample_base - share_base != point.next_sample:
                    raise ConfigError(
                        f"The inputs differ from the interrupted capture in '{out}' (batch {g} starts "
                        f"at sample {sample_base}, expected {share_base + point.next_sample}). Resume "
                        "with the same inputs and `batch_size`, or start again with --overwrite."
                    )
                current["mask"] = batch.mask
                last = sample_base + batch.n_samples - 1
                where = f"input batch {g} (samples {sample_base}-{last})"
                _forward(model, batch, recorder, device, where)
                tracer.detach()
                check_batch_dim(recorder.shapes, batch.n_samples)
                # columns follow the resolved (natural) order, not execution order
                rows = {hp.name: recorder.values[hp.name] for hp in hps}
                recorder.values.clear()
                check_row_agreement(rows)
                if not started:
                    specs = _layer_specs(rows, recorder.shapes)
                    writer.start(specs)
                    started = True
                # Concatenate and check on the model's device; one transfer to the CPU.
                x = (
                    torch.cat([r.x for r in rows.values()], dim=1)
                    if len(rows) > 1
                    else rows[hps[0].name].x
                )
                meta = _row_meta(batch, rows[hps[0].name], sample_base)
                x, meta, n_skipped = _handle_nonfinite(
                    x, meta, specs, config.on_nonfinite, g, writer.n_rows_added
                )
                writer.add(
                    x,
                    meta,
                    n_samples=batch.n_samples,
                    n_skipped=n_skipped,
                    skip_rows=point.rows_into_batch if b == point.batches_done else 0,
                )
                sample_base += batch.n_samples
                bar.advance(batch.n_samples, info=f"{writer.n_rows_added:,} rows")
        if not coord.distributed:
            writer.close()
        else:
            part = writer.finish()
    except Exception as e:
        if not coord.distributed:
            writer.abort()
            raise
        coord.report_failure(e)
        writer.stop()
        coord.check(e, on_failure=writer.abort)  # raises e, once every rank knows
        raise
    except BaseException:
        writer.abort()
        raise
    finally:
        tracer.detach()
        recorder.detach()
        model.train(was_training)
    if coord.distributed:
        _complete(coord, writer, part)
    return ActivationStore.open(out)


def _open_writer(coord: Coordinator, make: Callable[[], StoreWriter]) -> StoreWriter:
    """Rank 0 opens the store (lock, directory, resume checks) before the others
    open their parts of it; a rank that fails stops them all."""
    if not coord.distributed:
        return make()
    writer, error = None, None
    if coord.world.is_main:
        try:
            writer = make()
            coord.clear_failures(writer.work)  # those of an earlier run that failed
        except Exception as e:
            error = e
    coord.check(error, on_failure=writer.abort if writer is not None else None)
    if not coord.world.is_main:
        try:
            writer = make()
        except Exception as e:
            error = e
    coord.check(error, on_failure=writer.abort if writer is not None else None)
    assert writer is not None
    return writer


def _complete(coord: Coordinator, writer: StoreWriter, part: Any) -> None:
    """Every rank's part to rank 0, which merges them into the store."""
    parts = coord.gather(part, None, on_failure=writer.abort)
    error = None
    if coord.world.is_main:
        try:
            writer.complete(parts)
        except Exception as e:
            writer.abort()
            error = e
    coord.check(error)


def _known_layout(hp: Hookpoint) -> str | None:
    """The layout a hook point's TransformerLens hook or module type implies."""
    if hp.layout is not None:
        return hp.layout
    return None if hp.record_input else module_layout(hp.module)


def _check_first_batch(writer: StoreWriter, batch: InputBatch, out: str | Path) -> None:
    """Record the first batch's fingerprint with the job; on resume it must match (for
    an iterable of batches, the inputs' fingerprint alone cannot tell two apart)."""
    fp = batch_fingerprint(batch.args, batch.kwargs)
    saved = writer.saved_job.get("first_batch")
    if saved is not None and saved != fp:
        raise ConfigError(
            f"--resume continues the same capture, but this run's inputs differ from those of "
            f"the interrupted capture of '{out}' (its first batch is another). Resume with the "
            "same inputs, or start again with --overwrite."
        )
    writer.job["first_batch"] = fp


def _max_length(
    model: torch.nn.Module, inputs: Any, tokenizer: Any, max_length: int | None
) -> int | None:
    """Tokens per text: ``max_length`` when given; else, when the tokenizer sets no
    real limit of its own, the positions the model's config says it has."""
    if max_length is not None or tokenizer is None or not _is_texts(inputs):
        return max_length
    if isinstance(tokenizer, TransformerLensTexts):
        return getattr(model.cfg, "n_ctx", None)  # what to_tokens cuts texts to
    own = getattr(tokenizer, "model_max_length", None)
    if own is not None and own <= TOKENIZER_NO_LIMIT:
        return None  # the tokenizer cuts texts to its own limit
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        limit = getattr(cfg, key, None)
        if isinstance(limit, int) and limit > 0:
            log.info(
                "Texts are cut to %d tokens, the model's `%s` (its tokenizer sets no limit); "
                "--max-length (`max_length`) sets another.",
                limit,
                key,
            )
            return limit
    return None


def _is_texts(inputs: Any) -> bool:
    return bool(isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str))


def _count_samples(inputs: Any) -> int | None:
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return len(inputs)
    dataset = getattr(inputs, "dataset", None)  # a DataLoader
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def _layer_specs(rows: dict[str, LayerRows], shapes: dict[str, tuple[int, ...]]) -> list[LayerSpec]:
    specs, start = [], 0
    for name, r in rows.items():
        n = r.x.shape[1]
        specs.append(LayerSpec(name, start, start + n, (None, *shapes[name][1:]), r.layout))
        start += n
    return specs


def _handle_nonfinite(
    x: torch.Tensor,
    meta: dict[str, np.ndarray],
    layers: list[LayerSpec],
    mode: str,
    batch: int,
    first_row: int,
) -> tuple[torch.Tensor, dict[str, np.ndarray], int]:
    """Check rows ``x`` (on the model's device) for NaN/Inf; return them on the CPU."""
    finite_rows = torch.isfinite(x).all(dim=1)
    if bool(finite_rows.all()):
        return x.to("cpu"), meta, 0
    x, finite_rows = x.to("cpu"), finite_rows.to("cpu")
    if mode == "error":
        for layer in layers:
            name = layer.name
            bad = ~torch.isfinite(x[:, layer.start : layer.stop])
            if bad.any():
                first = int(torch.nonzero(bad.any(dim=1))[0])
                raise NonFiniteError(
                    f"Layer '{name}' has {int(bad.sum())} NaN/Inf values in "
                    f"{int(bad.any(dim=1).sum())} rows of input batch {batch}; the first is at "
                    f"row {first_row + first} (sample {int(meta['sample'][first])}, position {int(meta['position'][first])}). "
                    "Fix the model or inputs, or pass --on-nonfinite skip (`on_nonfinite='skip'`) "
                    "to drop such rows and count them."
                )
    keep = finite_rows.numpy()
    return x[finite_rows], {k: v[keep] for k, v in meta.items()}, int((~keep).sum())
