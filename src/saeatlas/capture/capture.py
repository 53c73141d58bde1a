"""Recording activations into a store: ``capture_activations``.

The chosen modules are recorded by hooks (:mod:`.recorder`), each batch's
outputs become rows (:mod:`.rows`, :mod:`.batch_rows`), and a
:class:`~saeatlas.store.StoreWriter` writes them; under ``torchrun`` each rank
captures its share of the batches (:mod:`.distributed`). The forward pass runs in
eval mode without gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import __version__
from .._coordinator import Coordinator, coordinate
from .._progress import progress_bar
from .._validation import (
    check_config_argument,
    check_flag_arguments,
    check_json_argument,
    check_path_argument,
)
from .._world import rank_device, share
from ..errors import ConfigError
from ..store import ActivationStore, StoreWriter
from ..store.shards import STORE_DTYPES
from .batch_rows import StoreRounding, check_widths, handle_nonfinite, layer_specs, row_meta
from .config import CaptureConfig
from .distributed import (
    agree,
    check_first_batch,
    complete_capture,
    count_batches,
    first_checked,
    open_writer,
)
from .hookpoints import Hookpoint, resolve_hookpoints
from .inputs import (
    check_max_length,
    count_samples,
    iter_input_batches,
    known_length,
    model_and_tokenizer,
)
from .job import capture_job, check_provenance, model_fingerprint
from .labels import check_batch_labels, check_stored_labels
from .layouts import (
    LayoutTracer,
    check_layout_layers,
    check_named_layout,
    choose_layout,
    module_layout,
    parse_layout,
)
from .masks import layer_masks
from .models import check_has_values, input_dtype, takes_token_ids
from .recorder import Recorder, check_batch_follows, run_forward
from .rows import (
    LayerRows,
    check_batch_dim,
    check_not_tokens,
    check_output_index,
    check_row_agreement,
    check_shape_options,
    to_rows,
    token_shapes,
)
from .texts import is_texts, text_max_length
from .transformer_lens import is_transformer_lens
from .transformer_lens import provenance as tl_provenance

log = logging.getLogger(__name__)


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
    # before the work: a number as `out` ended in pathlib's TypeError, and
    # `overwrite="no"` was read by its truth (it replaced the store at `out`)
    check_config_argument("config", config, CaptureConfig)
    check_path_argument("out", out)
    check_flag_arguments(resume=resume, overwrite=overwrite, progress=progress)
    check_json_argument("provenance", provenance)
    coord = coordinate(config.device, config.timeout_s, "capture", hint="resume with --resume")
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
    check_layout_layers([hp.name for hp in hps], config.layout)
    check_stored_labels(labels, known_length(inputs))
    model, tokenizer = model_and_tokenizer(model, inputs, tokenizer)
    tl_facts: dict[str, Any] = tl_provenance(model) if is_transformer_lens(model) else {}
    max_length = text_max_length(model, inputs, tokenizer, config.max_length)
    check_max_length(inputs, max_length)  # before the writer: nothing written is touched
    check_has_values(model)
    reads = tokenizer if is_texts(inputs) else None  # the tokenizer, when texts go through it
    job = capture_job(model, inputs, [hp.name for hp in hps], config, labels, reads)
    dtype = STORE_DTYPES[config.dtype] if config.dtype else None
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    # `job` knows the model as given; `.to(dtype)` cast it in place, so a Python caller
    # that ablates the same object later gives the cast one: the ablation knows both
    cast = {"model_cast": model_fingerprint(model)} if dtype is not None else {}
    own = {"max_length": max_length, **tl_facts, **cast}  # facts later stages read
    check_provenance(provenance, own, is_texts(inputs))
    prov = {
        "model": type(model).__name__,
        "hookpoints": list(hookpoints) if not isinstance(hookpoints, str) else [hookpoints],
        "inputs": type(inputs).__name__,
        "saeatlas_version": __version__,
        "torch_version": torch.__version__,
        **{k: v for k, v in own.items() if v is not None},
        **(provenance or {}),
    }
    if coord.distributed:
        agree(coord, job)
        lo, hi = share(count_batches(inputs, config.batch_size), world)
        prov["world_size"] = world.size
    else:
        lo, hi = 0, None
    # What can refuse the inputs or settings runs before the writer makes its files. Rows
    # are made in the hook: the model's later in-place ops (ReLU(inplace=True)) miss them.
    current: dict[str, Any] = {"masks": {}, "tokens": set()}
    layouts = {hp.name: choose_layout(hp.name, _known_layout(hp), config.layout) for hp in hps}
    default_layout, _ = parse_layout(config.layout)
    defaulted: set[str] = set()  # the layers the default layout was given to
    tracer = LayoutTracer(model)

    def rows_of(name: str, t: torch.Tensor) -> LayerRows:
        check_named_layout(name, tuple(t.shape), config.layout)
        check_not_tokens(t, name, current["tokens"])
        if layouts[name] is None and t.ndim == 4:  # fixed once, on the first batch
            layouts[name] = tracer.lookup(t)
            if layouts[name] is None and default_layout is not None:
                layouts[name] = default_layout
                defaulted.add(name)
        elif layouts[name] is None and t.ndim == 3:  # [batch, C, L] after a Conv1d, say
            layouts[name] = tracer.lookup(t)
        mask = current["masks"].get(name)
        return to_rows(t, name, mask=mask, spatial=config.spatial, layout=layouts[name])

    recorder = Recorder(
        hps, rows_of, config.output_index, stop_when_done=config.early_stop, once=True
    )
    total = count_samples(inputs) if not coord.distributed else None
    writer = open_writer(
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

    def input_batches() -> Any:
        return iter_input_batches(
            inputs,
            batch_size=config.batch_size,
            tokenizer=tokenizer,
            labels=labels,
            max_length=max_length,
            float_dtype=input_dtype(model),
            token_ids=takes_token_ids(model),
        )

    if writer.already_complete:  # a resume of a capture that had stored every row
        error = None
        try:
            first = next(iter(input_batches()), None)
            if first is not None:
                check_first_batch(writer, first, out)
        except Exception as e:
            error = e
        coord.check(error)
        log.info("'%s' is complete: its capture had stored every row; nothing to resume.", out)
        return ActivationStore.open(out)
    coord.watch(writer.work)
    point = writer.resume_point
    was_training = model.training
    model.eval()
    try:
        if any(layout is None for layout in layouts.values()):  # a 4-D output may need tracing
            tracer.attach()  # before the recorder: a module's hooks run in the order they were added
        recorder.attach()
        with torch.no_grad(), progress_bar("capture", total, progress) as bar:
            sample_base, share_base, started, n_mine, n_cut = 0, 0, False, 0, 0
            rounding = StoreRounding(STORE_DTYPES[config.store_dtype], writer)
            waiting: _Waiting | None = None

            def store(w: _Waiting) -> None:
                parts, meta, n_skipped = handle_nonfinite(
                    w.parts,
                    w.meta,
                    specs,
                    config.on_nonfinite,
                    w.batch,
                    writer.n_rows_added,
                    STORE_DTYPES[config.store_dtype],
                )
                rounding.update(parts)
                writer.add(
                    parts, meta, n_samples=w.n_samples, n_skipped=n_skipped, skip_rows=w.skip_rows
                )
                bar.advance(w.n_samples, info=f"{writer.n_rows_added:,} rows")

            label_type = None  # every batch's, others' and resumed ones' too
            for g, batch in enumerate(first_checked(coord, writer, input_batches(), out)):
                label_type = check_batch_labels(batch.labels, label_type, f"input batch {g}")
                if hi is not None and g >= hi:
                    break
                if g < lo:  # another rank's: count its samples
                    sample_base += batch.n_samples
                    continue
                coord.poll()
                if g == lo:
                    share_base = sample_base
                b = g - lo  # this rank's (and the writer's) count of batches
                n_mine, n_cut = b + 1, n_cut + batch.n_cut
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
                current.update(tokens=token_shapes(batch), masks=layer_masks(model, hps, batch))
                last = sample_base + batch.n_samples - 1
                where = f"input batch {g} (samples {sample_base}-{last})"
                # The first batch runs whole, early stop or not: a recorded module that
                # runs again later in the pass is an error either way.
                recorder.stop_when_done = config.early_stop and started
                probe = config.early_stop and not started
                run_forward(model, batch, recorder, device, where, probe=probe)
                tracer.detach()
                check_batch_dim(recorder.shapes, batch.n_samples, where)
                # columns follow the resolved (natural) order, not execution order
                rows = {hp.name: recorder.values[hp.name] for hp in hps}
                recorder.values.clear()
                check_row_agreement(rows)
                if not started:
                    check_batch_follows(model, batch, recorder, device, where)
                    check_output_index(config.output_index, recorder.plain, [hp.name for hp in hps])
                    specs = layer_specs(rows, recorder.shapes)
                    check_shape_options(
                        config.layout, config.spatial, recorder.shapes, rows, layouts, defaulted
                    )
                    writer.start(specs)
                    started = True
                check_widths(rows, specs, where)
                meta = row_meta(batch, rows[hps[0].name], sample_base)
                # Stored one batch late: by then a GPU has run this batch (the next one
                # is queued behind it), so checking it for NaN/Inf does not leave it idle.
                if waiting is not None:
                    store(waiting)
                waiting = _Waiting(
                    [r.x for r in rows.values()],
                    meta,
                    g,
                    batch.n_samples,
                    point.rows_into_batch if b == point.batches_done else 0,
                )
                sample_base += batch.n_samples
            if waiting is not None:
                store(waiting)
            point.check_reached(n_mine, out)
        part = replace(writer.finish(), n_texts_cut=n_cut)
    except Exception as e:
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
    complete_capture(coord, writer, part)
    opened = ActivationStore.open(out)
    if world.is_main:  # its writer merged every rank's range
        rounding.warn_constant(opened.layers, opened.std)
    return opened


class _Waiting(NamedTuple):
    """One batch's rows, recorded and waiting to be checked and stored."""

    parts: list[torch.Tensor]
    """The layers' ``[rows, units]`` blocks, in the store's column order."""
    meta: dict[str, np.ndarray]
    batch: int
    n_samples: int
    skip_rows: int
    """Leading rows an interrupted capture already committed."""


def _known_layout(hp: Hookpoint) -> str | None:
    """The layout a hook point's TransformerLens hook or module type implies (conv,
    pooling and padding modules take channel-first maps too: their ``:input``)."""
    if hp.layout is not None:
        return hp.layout
    return module_layout(hp.module)
