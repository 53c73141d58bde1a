"""Commands on activation stores: layers, capture, info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from .app import _output_index, app, console, on_rank_zero
from .options import model_class_option, nonfinite_option, timeout_option


@app.command("layers")
@on_rank_zero
def layers_cmd(
    model: str = typer.Argument(
        ...,
        help="Model SPEC: 'package.module:factory', 'file.py:factory' "
        "or a local Hugging Face model directory.",
    ),
    inputs: Path | None = typer.Option(
        None,
        "--inputs",
        help="Example input file for the dry run (.npy, .safetensors, .txt); guessed when omitted.",
    ),
    model_class: str = model_class_option(),
) -> None:
    """List a model's hook points with their output shapes (one dry forward pass)."""
    from ..capture import example_inputs, iter_input_batches, list_layers, load_inputs, load_model
    from ..capture.models import input_dtype, takes_token_ids
    from ..capture.positions import position_table
    from ..capture.texts import text_max_length
    from ..errors import InputsError

    loaded = load_model(model, model_class=model_class)
    if inputs is None:
        example = example_inputs(loaded.model, loaded.tokenizer)
    else:
        values = load_inputs(inputs)
        cut = text_max_length(loaded.model, values, loaded.tokenizer, None)
        if cut is None and isinstance(values, np.ndarray) and values.dtype.kind in "iu":
            # token ids longer than the model's positions, cut as texts are: they ended
            # in "index out of range" and advice of --max-length, which `layers` has not
            cut = position_table(loaded.model)[1] if takes_token_ids(loaded.model) else None
        batch = next(
            iter_input_batches(
                values,
                batch_size=2,
                tokenizer=loaded.tokenizer,
                # texts cut as `capture` cuts them (they ended in "index out of range")
                max_length=cut,
                float_dtype=input_dtype(loaded.model),
                token_ids=takes_token_ids(loaded.model),
            ),
            None,
        )
        if batch is None:
            raise InputsError(f"'{inputs}' holds no samples; give at least one for the dry run.")
        example = batch.kwargs if batch.kwargs else batch.args[0]
    table = Table("hook point", "type", "output shape")
    for info in list_layers(loaded.model, example):
        # a name with a lone surrogate (possible from Python) is shown escaped, "a\ud800b":
        # printed as it is, it ended the listing in a UnicodeEncodeError traceback
        name = info.name.encode("utf-8", "backslashreplace").decode("utf-8")
        shape = "-" if info.shape is None else str(list(info.shape))
        # a module reused in one pass was listed as any other, and its capture refused
        again = (
            f" (ran {info.calls} times: capture takes modules that run once)"
            if info.calls > 1
            else ""
        )
        table.add_row(escape(name), info.type, shape + again)
    console.print(table)


@app.command("capture")
def capture_cmd(
    model: str = typer.Option(
        ...,
        "--model",
        help="Model SPEC: 'package.module:factory', "
        "'file.py:factory' or a local Hugging Face model directory.",
    ),
    inputs: Path = typer.Option(
        ...,
        "--inputs",
        help="Inputs: .npy or .safetensors array, or a "
        ".txt file with one text per line (needs a tokenizer).",
    ),
    layers: list[str] = typer.Option(
        ...,
        "--layers",
        help="Layer names, globs (* within a dotted part, ** across dots) or re:regexes "
        "(several after one flag); ':input' records a module's input.",
    ),
    out: Path = typer.Option(..., "--out", help="Store directory to write."),
    model_class: str = model_class_option(),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        help="One label per sample (.npy, .jsonl or text); a .jsonl --inputs file's "
        'records may hold them instead, as "label".',
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Samples per forward pass."),
    spatial: str = typer.Option("positions", "--spatial", help="Conv maps: 'positions' or 'mean'."),
    layout: str | None = typer.Option(
        None,
        "--layout",
        help="Axes of 4-D outputs whose module or hook name does not say: 'image' [batch, C, H, "
        "W], 'heads' [batch, pos, head, d_head] or 'pattern' [batch, head, q_pos, k_pos]; "
        "LAYER=LAYOUT (comma-separated) for some layers.",
    ),
    output_index: str | None = typer.Option(
        None,
        "--output-index",
        help="Element of a tuple/dict output to record (default: the first tensor).",
    ),
    device: str | None = typer.Option(None, "--device", help="Device for the model (cpu, cuda)."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="Run the model in float32, float16 or bfloat16."
    ),
    store_dtype: str = typer.Option(
        "float32", "--store-dtype", help="Dtype of stored activations."
    ),
    shard_rows: int | None = typer.Option(
        None, "--shard-rows", help="Rows per shard (default: about 64 MiB per shard)."
    ),
    on_nonfinite: str = typer.Option(
        "error", "--on-nonfinite", help="NaN/Inf rows: 'error' or 'skip' (drop and count them)."
    ),
    max_length: int | None = typer.Option(
        None,
        "--max-length",
        help="Truncate texts, and arrays of integer token ids [n, seq], to this many tokens "
        "(default for texts: the tokenizer's limit, else the model's positions).",
    ),
    early_stop: bool = typer.Option(
        True,
        "--early-stop/--no-early-stop",
        help="Stop each forward pass after the last recorded layer.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted capture at --out."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the store at --out."),
    timeout: float = timeout_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Record the activations of the chosen layers into an activation store.

    Under `torchrun --nproc_per_node N -m saeatlas capture ...` each rank captures its
    share of the inputs into the same --out (a shared directory across machines)."""
    from .._world import is_main_process
    from ..capture import CaptureConfig, capture_activations, load_inputs, load_model
    from ..capture.input_files import given_labels

    config = CaptureConfig(
        batch_size=batch_size,
        spatial=spatial,
        layout=layout,
        output_index=_output_index(output_index),
        device=device,
        dtype=dtype,
        store_dtype=store_dtype,
        shard_rows=shard_rows,
        on_nonfinite=on_nonfinite,
        max_length=max_length,
        early_stop=early_stop,
        timeout_s=timeout,
    )
    loaded = load_model(model, model_class=model_class)
    data = load_inputs(inputs)
    given = given_labels(inputs, data, labels)
    store = capture_activations(
        loaded.model,
        data,
        layers,
        out,
        config,
        tokenizer=loaded.tokenizer,
        labels=given,
        resume=resume,
        overwrite=overwrite,
        progress=not quiet,
        provenance={"model": model, "inputs": str(inputs)},
    )
    if is_main_process():
        print_summary(store)


@app.command("info")
@on_rank_zero
def info_cmd(
    store: Path = typer.Argument(..., help="Store directory or .npy file."),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Read every shard: check its sha256 and for NaN/Inf, and recompute the per-unit "
        "mean and std; check that rows.parquet has every row.",
    ),
    on_nonfinite: str = nonfinite_option(),
) -> None:
    """Summarise an activation store (its manifest)."""
    from ..store import ActivationStore

    s = ActivationStore.open(store, verify=verify, on_nonfinite=on_nonfinite)
    if verify:
        s.verify()
    print_summary(s)
    if verify and s.summary().kind == "npy":  # no shards, sha256 or manifest to match
        console.print(
            f"Every row of '{escape(str(store))}' was read and checked for NaN/Inf (a .npy "
            "has no sha256 or statistics of its own to match)."
        )
    elif verify:
        console.print(
            f"All {s.n_shards} shards match their sha256 and the manifest's per-unit mean and "
            "std; rows.parquet has every row."
        )


def print_summary(store: Any) -> None:
    """Print a store's summary: rows, units, layers and their column ranges."""
    s = store.summary()
    console.print(f"[bold]{escape(s.path)}[/] ({s.kind})", soft_wrap=True)
    console.print(
        f"{s.n_rows:,} rows x {s.n_units:,} units, {s.dtype}, {s.n_shards} shard(s), "
        f"{s.n_bytes / 2**20:.1f} MiB",
        soft_wrap=True,
    )
    if s.n_nonfinite_rows_skipped:
        console.print(f"{s.n_nonfinite_rows_skipped:,} rows with NaN/Inf were skipped.")
    cut = s.provenance.get("n_texts_cut")
    if isinstance(cut, int) and cut:
        console.print(
            f"{cut:,} texts were cut to {s.provenance.get('max_length')} tokens: their later "
            "tokens have no rows."
        )
    table = Table("layer", "columns", "units", "layout", "output shape", "mean", "std")
    for layer in s.layers:
        mean = np.asarray(store.mean[layer.start : layer.stop], dtype=np.float64)
        unit_std = np.asarray(store.std[layer.start : layer.stop], dtype=np.float64)
        # the std of all the layer's values (every unit has every row), not the mean of
        # its units' stds, which is half of it when the units' means differ; the units'
        # variances plus that of their means (E[x^2] - E[x]^2 cancels for a large mean)
        std = float(np.sqrt(np.mean(unit_std**2) + np.mean((mean - mean.mean()) ** 2)))
        table.add_row(
            escape(layer.name),
            f"{layer.start}:{layer.stop}",
            str(layer.n_units),
            layer.layout,
            str(list(layer.shape)),
            f"{mean.mean():.4g}",
            f"{std:.4g}",
        )
    console.print(table)
