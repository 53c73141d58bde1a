"""The ``saeatlas`` command line: one thin command per pipeline stage.

Each command parses options and calls one documented Python function. User
errors (:class:`~saeatlas.errors.AtlasError`) become one line on stderr and
exit code 1, in :meth:`_Group.invoke`; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import AtlasError, ConfigError

#: Options that take several values after one flag (``--layers a b c``).
MULTI_VALUE_OPTIONS = ("--layers", "--values", "--resolutions", "--nulls", "--cases", "--seed-sae")

console = Console()
err_console = Console(stderr=True)


def _expand_multi_value(args: list[str]) -> list[str]:
    """Rewrite ``--layers a b`` as ``--layers a --layers b`` for click."""
    out: list[str] = []
    current: str | None = None
    for a in args:
        if a in MULTI_VALUE_OPTIONS:
            current = a
            continue
        if current is not None and not a.startswith("-"):
            out += [current, a]
            continue
        current = None
        out.append(a)
    return out


class _Group(TyperGroup):
    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        return super().main(_expand_multi_value(args), *rest, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AtlasError as e:
            if (ctx.obj or {}).get("debug"):
                raise
            err_console.print(
                f"[bold red]Error:[/] {e}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    help="saeatlas: the macroscopic structure of neural networks, found with sparse autoencoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"saeatlas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what each step does."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.ensure_object(dict)["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def _output_index(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


@app.command("layers")
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
) -> None:
    """List a model's hook points with their output shapes (one dry forward pass)."""
    from .capture import example_inputs, iter_input_batches, list_layers, load_inputs, load_model

    loaded = load_model(model)
    if inputs is None:
        example = example_inputs(loaded.model, loaded.tokenizer)
    else:
        batch = next(
            iter_input_batches(load_inputs(inputs), batch_size=2, tokenizer=loaded.tokenizer)
        )
        example = batch.kwargs if batch.kwargs else batch.args[0]
    table = Table("hook point", "type", "output shape")
    for info in list_layers(loaded.model, example):
        table.add_row(info.name, info.type, "-" if info.shape is None else str(list(info.shape)))
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
        help="Layer names, globs or re:regexes "
        "(several after one flag); ':input' records a module's input.",
    ),
    out: Path = typer.Option(..., "--out", help="Store directory to write."),
    labels: Path | None = typer.Option(
        None, "--labels", help="One label per sample (.npy or text)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Samples per forward pass."),
    spatial: str = typer.Option("positions", "--spatial", help="Conv maps: 'positions' or 'mean'."),
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
        None, "--max-length", help="Truncate texts to this many tokens."
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Record the activations of the chosen layers into an activation store."""
    from .capture import CaptureConfig, capture_activations, load_inputs, load_labels, load_model

    config = CaptureConfig(
        batch_size=batch_size,
        spatial=spatial,
        output_index=_output_index(output_index),
        device=device,
        dtype=dtype,
        store_dtype=store_dtype,
        shard_rows=shard_rows,
        on_nonfinite=on_nonfinite,
        max_length=max_length,
        early_stop=early_stop,
    )
    loaded = load_model(model)
    data = load_inputs(inputs)
    store = capture_activations(
        loaded.model,
        data,
        layers,
        out,
        config,
        tokenizer=loaded.tokenizer,
        labels=load_labels(labels) if labels else None,
        resume=resume,
        overwrite=overwrite,
        progress=not quiet,
        provenance={"model": model, "inputs": str(inputs)},
    )
    print_summary(store)


@app.command("info")
def info_cmd(
    store: Path = typer.Argument(..., help="Store directory or .npy file."),
    verify: bool = typer.Option(False, "--verify", help="Read every shard and check its sha256."),
) -> None:
    """Summarise an activation store (its manifest)."""
    from .store import ActivationStore

    s = ActivationStore.open(store, verify=verify)
    if verify:
        for _ in s.iter_batches(1 << 16, shuffle=False, dtype=None):
            pass
    print_summary(s)
    if verify:
        console.print(f"All {s.n_shards} shards match their sha256.")


def print_summary(store: Any) -> None:
    """Print a store's summary: rows, units, layers and their column ranges."""
    s = store.summary()
    console.print(f"[bold]{s.path}[/] ({s.kind})", soft_wrap=True)
    console.print(
        f"{s.n_rows:,} rows x {s.n_units:,} units, {s.dtype}, {s.n_shards} shard(s), "
        f"{s.n_bytes / 2**20:.1f} MiB",
        soft_wrap=True,
    )
    if s.n_nonfinite_rows_skipped:
        console.print(f"{s.n_nonfinite_rows_skipped:,} rows with NaN/Inf were skipped.")
    table = Table("layer", "columns", "units", "layout", "output shape", "mean", "std")
    for layer in s.layers:
        mean = store.mean[layer.start : layer.stop]
        std = store.std[layer.start : layer.stop]
        table.add_row(
            layer.name,
            f"{layer.start}:{layer.stop}",
            str(layer.n_units),
            layer.layout,
            str(list(layer.shape)),
            f"{mean.mean():.4g}",
            f"{std.mean():.4g}",
        )
    console.print(table)


def _train_cmd(
    acts: Path = typer.Option(..., "--acts", help="Activation store directory or .npy file."),
    out: Path = typer.Option(..., "--out", help="SAE directory to write."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML/JSON file of training settings; flags given here override it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an SAE at --out."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint at --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **settings: Any,
) -> None:
    """Train a sparse autoencoder on an activation store."""
    from ._config_cli import build_config
    from .train import TrainConfig, train_sae

    cfg = build_config(TrainConfig, config, settings)
    result = train_sae(acts, cfg, out, overwrite=overwrite, resume=resume, progress=not quiet)
    final = result.summary["final"]
    console.print(
        f"Trained a {cfg.architecture} SAE ({result.sae.cfg.d_in} -> {result.sae.cfg.d_sae}) on "
        f"{result.summary['tokens']:,} rows: FVU {final['fvu']:.4f}, L0 {final['l0']:.1f}, "
        f"dead {final['dead_fraction']:.1%}. Saved to {result.path}.",
        soft_wrap=True,
    )


@app.command("evaluate")
def evaluate_cmd(
    sae: Path = typer.Option(..., "--sae", help="SAE directory."),
    acts: Path = typer.Option(..., "--acts", help="Activation store directory or .npy file."),
    start: int = typer.Option(0, "--start", help="First row to evaluate on (e.g. held-out rows)."),
    stop: int | None = typer.Option(None, "--stop", help="One past the last row (default: all)."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per batch."),
    device: str = typer.Option("cpu", "--device", help="Device (cpu, cuda)."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model SPEC: with --inputs and --labels, also the downstream loss recovered.",
    ),
    inputs: Path | None = typer.Option(None, "--inputs", help="Inputs for the downstream loss."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels for the cross-entropy loss of a classifier."
    ),
) -> None:
    """Reconstruction and sparsity metrics of an SAE on a store's rows; with --model,
    the fraction of the model's loss its reconstruction recovers."""
    from .evaluate import evaluate_sae
    from .sae import SparseAutoencoder
    from .store import ActivationStore

    loaded_sae = SparseAutoencoder.load(sae)
    result = evaluate_sae(
        loaded_sae,
        ActivationStore.open(acts),
        start=start,
        stop=stop,
        batch_size=batch_size,
        device=device,
    )
    table = Table("metric", "value")
    for key, value in result.as_dict().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    if model is not None:
        from .capture import load_inputs, load_labels, load_model
        from .evaluate import loss_recovered

        if inputs is None:
            raise ConfigError("--model needs --inputs (and --labels for a classifier's loss).")
        loaded = load_model(model)
        down = loss_recovered(
            loaded_sae,
            loaded.model,
            load_inputs(inputs),
            tokenizer=loaded.tokenizer,
            labels=load_labels(labels) if labels else None,
            device=device if device != "cpu" else None,
        )
        for key in ("loss_clean", "loss_sae", "loss_zero", "fraction_recovered"):
            table.add_row(key, f"{getattr(down, key):.4f}")
    console.print(table)
    counts, edges = result.density_histogram(bins=8)
    console.print(
        "log10 firing density of live latents: "
        + ", ".join(f"[{a:.1f},{b:.1f}): {c}" for a, b, c in zip(edges[:-1], edges[1:], counts)),
        soft_wrap=True,
    )


@app.command("import-saelens")
def import_saelens_cmd(
    src: Path = typer.Argument(
        ..., help="A SAELens SAE directory (cfg.json + sae_weights.safetensors)."
    ),
    out: Path = typer.Option(..., "--out", help="saeatlas SAE directory to write."),
) -> None:
    """Convert a SAELens SAE directory into a saeatlas one."""
    from .sae.saelens import load_saelens

    sae = load_saelens(src)
    sae.save(out)
    console.print(
        f"Imported a {sae.cfg.architecture} SAE ({sae.cfg.d_in} -> {sae.cfg.d_sae}) to {out}."
    )


@app.command("export-saelens")
def export_saelens_cmd(
    sae: Path = typer.Argument(..., help="A saeatlas SAE directory."),
    out: Path = typer.Option(..., "--out", help="SAELens SAE directory to write."),
) -> None:
    """Write a saeatlas SAE as a SAELens directory (SAE.load_from_disk reads it)."""
    from .sae import SparseAutoencoder
    from .sae.saelens import export_saelens

    export_saelens(SparseAutoencoder.load(sae), out)
    console.print(f"Exported {sae} to {out} in SAELens's format.")


def _sweep_cmd(
    acts: Path = typer.Option(..., "--acts", help="Activation store directory or .npy file."),
    out: Path = typer.Option(..., "--out", help="Directory for the family and sweep.json."),
    over: str = typer.Option(
        "k", "--over", help="Setting to sweep: k, l1_coefficient or l0_coefficient."
    ),
    values: list[float] = typer.Option(
        ..., "--values", help="Values of --over (several after one flag)."
    ),
    seeds: int = typer.Option(2, "--seeds", help="1, or 2 to measure decoder stability."),
    heldout_fraction: float = typer.Option(
        0.1, "--heldout-fraction", help="Last rows held out for evaluation."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML/JSON file of training settings; flags given here override it."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **settings: Any,
) -> None:
    """Train a family of SAEs over a sparsity setting and recommend one (Pareto knee)."""
    from ._config_cli import build_config
    from .sweep import sweep
    from .train import TrainConfig

    base = build_config(TrainConfig, config, settings)
    result = sweep(
        acts,
        base,
        over,
        values,
        out,
        seeds=seeds,
        heldout_fraction=heldout_fraction,
        progress=not quiet,
    )
    table = Table(over, "FVU (held out)", "L0", "dead", "stability", "frontier", "")
    for i, p in enumerate(result.points):
        table.add_row(
            f"{p.value:g}",
            f"{p.fvu:.4f}",
            f"{p.l0:.1f}",
            f"{p.dead_fraction:.1%}",
            "-" if p.stability is None else f"{p.stability:.3f}",
            "yes" if p.on_front else "",
            "recommended" if i == result.recommended else "",
        )
    console.print(table)
    console.print(f"Rule: {result.rule}. Written to {out}/sweep.json.", soft_wrap=True)


def _with_config_flags(func: Any, config_cls: type) -> Any:
    """Give ``func`` one keyword option per field of ``config_cls`` (for typer)."""
    import inspect

    from ._config_cli import config_parameters

    sig = inspect.signature(func)
    fixed = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = sig.replace(parameters=fixed + config_parameters(config_cls))
    return func


def _analyze_cmd(
    sae: Path = typer.Option(..., "--sae", help="SAE directory (saeatlas or SAELens)."),
    acts: Path = typer.Option(..., "--acts", help="Activation store directory or .npy file."),
    out: Path = typer.Option(..., "--out", help="Atlas directory to write."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML/JSON file of atlas settings; flags given here override it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an atlas at --out."),
    seed_sae: list[Path] = typer.Option(
        [],
        "--seed-sae",
        help="SAE directories trained the same way with other seeds (several after one flag): "
        "module stability across seeds.",
    ),
    seeds: int = typer.Option(
        1,
        "--seeds",
        help="SAEs for seed stability, counting --sae: the --seed-sae ones first, the rest "
        "trained like --sae into <sae>-seed1, -seed2, ... (reused when there).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model SPEC (as for capture): ablate every module in it and measure the loss.",
    ),
    inputs: Path | None = typer.Option(
        None, "--inputs", help="Inputs for the ablation (as for capture); needs --model."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="One label per input: the loss target and the per-label split."
    ),
    ablation_mode: str = typer.Option(
        "mean", "--ablation-mode", help="Set ablated units to their 'mean' or to 'zero'."
    ),
    ablation_draws: int = typer.Option(
        100, "--ablation-draws", help="Random unit sets per module for the ablation p-value."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **settings: Any,
) -> None:
    """Find modules of units and the feature communities behind them, with significance."""
    from ._config_cli import build_config
    from .structure import AtlasConfig, map_structure

    cfg = build_config(AtlasConfig, config, settings)
    if (out / "atlas.json").exists() and not overwrite:
        raise ConfigError(
            f"'{out}' already holds an atlas. Choose another --out, or pass --overwrite."
        )
    if (inputs is not None or labels is not None) and model is None:
        raise ConfigError("--inputs and --labels are for the ablation; give --model too.")
    if model is not None and inputs is None:
        raise ConfigError("--model needs --inputs: the inputs to run the ablated model on.")
    if seeds > 1 and len(seed_sae) < seeds - 1:
        from .structure.seeds import train_seed_saes

        seed_sae = train_seed_saes(sae, acts, seeds, given=seed_sae, progress=not quiet)
    atlas = map_structure(sae, acts, cfg, seed_saes=seed_sae, progress=not quiet)
    if model is not None:
        from .capture import load_inputs, load_labels, load_model
        from .store import ActivationStore
        from .structure.ablation import ablate_atlas

        loaded = load_model(model)
        ablate_atlas(
            atlas,
            loaded.model,
            load_inputs(inputs),
            ActivationStore.open(acts),
            labels=load_labels(labels) if labels else None,
            mode=ablation_mode,
            n_random=ablation_draws,
            tokenizer=loaded.tokenizer,
            random_state=cfg.seed,
            progress=not quiet,
        )
    atlas.save(out, overwrite=overwrite)
    print_atlas(atlas)
    console.print(f"Written to {out}.", soft_wrap=True)


def print_atlas(atlas: Any) -> None:
    """The atlas's modules as a table (with stability, preferred label and ablation
    when the atlas has them), its verdict, and the random-SAE control."""
    s, m = atlas.summary, atlas.modules
    cols = {
        "module": lambda r: str(r.module),
        "units": lambda r: str(r.n_units),
        "features": lambda r: str(r.n_features),
        "layers": lambda r: ", ".join(r.layers),
        "z": lambda r: f"{r.z:.1f}",
        "p": lambda r: f"{r.p:.2g}",
        "significant": lambda r: "yes" if r.significant else "no",
    }
    if "stability" in m:
        cols["stability"] = lambda r: f"{r.stability:.2f}"
    if "preferred_label" in m:
        cols["label"] = lambda r: f"{r.preferred_label} ({r.selectivity:.2f})"
    if "ablation_effect" in m:
        cols["ablation Δloss"] = lambda r: f"{r.ablation_effect:+.3f}"
        cols["ablation p"] = lambda r: f"{r.ablation_p:.2g}"
    table = Table(title=f"{s['n_modules']} modules ({s['module_kind']})")
    for name in cols:
        table.add_column(name)
    for row in m.itertuples():
        table.add_row(*(fmt(row) for fmt in cols.values()))
    console.print(table)
    if s.get("z") is not None:
        console.print(
            f"Modularity {s['modularity']:.3f}; strictest null ({s['strictest_null']}) "
            f"{s['null_mean']:.3f} ± {s['null_std']:.3f}, z {s['z']:.1f}, p {s['p']:.2g}.",
            soft_wrap=True,
        )
    console.print(s["message"], soft_wrap=True)
    ctl = s.get("control")
    if ctl:
        console.print(
            f"Random-SAE control: modularity {ctl['modularity']:.3f} (real "
            f"{s['modularity']:.3f}), {ctl['n_significant_modules']} significant modules, "
            f"unit modules' ARI with the real ones {ctl.get('unit_ari', float('nan')):.2f}.",
            soft_wrap=True,
        )


@app.command("validate")
def validate_cmd(
    cases: list[str] = typer.Option(
        ["easy", "superposition", "null", "null_superposition"],
        "--cases",
        help="Planted cases to run (several after one flag).",
    ),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per case (0, 1, ...)."),
    rows: int = typer.Option(20_000, "--rows", help="Rows of planted activations per case."),
    d_sae: int = typer.Option(512, "--d-sae", help="Latents of the SAE trained per case."),
) -> None:
    """Run the atlas and its baselines on activations with planted modules; print the scores."""
    from .structure.planted import PRESETS
    from .structure.validate import ValidationSettings, validate

    unknown = [c for c in cases if c not in PRESETS]
    if unknown:
        raise ConfigError(
            f"Unknown case(s) {unknown} for --cases; expected some of: {sorted(PRESETS)}."
        )
    table = validate(
        tuple(cases), tuple(range(seeds)), ValidationSettings(n_rows=rows, d_sae=d_sae)
    )
    out = Table(title="Planted-structure validation (ARI against the planted unit modules)")
    for col in ("case", "seed", "method", "ARI", "modules", "significant", "s"):
        out.add_column(col, no_wrap=True)
    for r in table.itertuples():
        out.add_row(
            r.case,
            str(r.seed),
            r.method,
            f"{r.ari:.3f}",
            str(r.n_modules),
            ""
            if r.n_significant is None or r.n_significant != r.n_significant
            else str(int(r.n_significant)),
            f"{r.seconds:.1f}",
        )
    console.print(out, width=max(console.width, 110))


@app.command("report")
def report_cmd(
    atlas_dir: Path = typer.Argument(..., help="Atlas directory (what `saeatlas analyze` wrote)."),
    out: Path | None = typer.Option(
        None, "--out", help="HTML file to write [default: ATLAS_DIR/report.html]."
    ),
    sweep: Path | None = typer.Option(
        None,
        "--sweep",
        help="Sweep directory the SAE came from [default: the one atlas.json names, "
        "else sweep/ beside the atlas].",
    ),
    max_map_points: int = typer.Option(
        20_000,
        "--max-map-points",
        help="At most this many features on the feature map (all module members are kept).",
    ),
) -> None:
    """Write a self-contained HTML report of an atlas (and PNG figures under ATLAS_DIR/figures)."""
    from .report import write_report

    result = write_report(atlas_dir, out, sweep_dir=sweep, max_map_points=max_map_points)
    console.print(str(result.path), soft_wrap=True, highlight=False)


def _register_train() -> None:
    from .structure import AtlasConfig
    from .train import TrainConfig

    app.command("train")(_with_config_flags(_train_cmd, TrainConfig))
    app.command("sweep")(_with_config_flags(_sweep_cmd, TrainConfig))
    app.command("analyze")(_with_config_flags(_analyze_cmd, AtlasConfig))


_register_train()


def _print_stage(outcome: Any) -> None:
    """One line per pipeline stage, as it happens."""
    mark = {"ran": "[green]ran[/]", "skipped": "[yellow]skipped[/]", "off": "[dim]off[/]"}
    took = f" in {outcome.seconds:.1f} s" if outcome.status == "ran" else ""
    console.print(
        f"[bold]{outcome.name}[/] {mark.get(outcome.status, outcome.status)}{took}: "
        f"{outcome.reason}",
        soft_wrap=True,
        highlight=False,
    )


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def print_modules(atlas: Any) -> None:
    """The modules of an atlas as one table: where they live, how sure we are, what they do."""
    from .pipeline import module_summary

    layers = list(atlas.summary.get("layers", []))
    table = Table(
        title=f"{atlas.summary['n_modules']} modules",
        caption=f"units per layer: {' / '.join(layers)}. Modules are "
        f"{atlas.summary['module_kind']}.",
    )
    columns = atlas.modules.columns
    has = {
        "stability": "stability" in columns,
        "ablation": "ablation_effect" in columns,
        "label": "preferred_label" in columns,
    }
    heads = ["module", "units", "features", "z", "p", "sig."]
    heads += ["stability"] * has["stability"]
    heads += ["ablation Δloss", "ablation p"] if has["ablation"] else []
    heads += ["label (selectivity)"] * has["label"]
    for col in heads:
        table.add_column(col, justify="left" if col == "sig." else "right", no_wrap=True)
    for r in module_summary(atlas).itertuples():
        cells = [
            str(r.module),
            "/".join(str(r.units_per_layer.get(l, 0)) for l in layers),
            str(r.n_features),
            _fmt(r.z, ".1f"),
            _fmt(r.p, ".2g"),
            "yes" if r.significant else "no",
        ]
        if has["stability"]:
            cells.append(_fmt(r.stability, ".2f"))
        if has["ablation"]:
            cells += [_fmt(r.ablation_effect, ".3f"), _fmt(r.ablation_p, ".2g")]
        if has["label"]:
            label = "-" if r.preferred_label is None else str(r.preferred_label)
            if r.preferred_label is not None and r.selectivity == r.selectivity:
                label += f" ({r.selectivity:.2f})"
            cells.append(label)
        table.add_row(*cells)
    # rich never prints wider than its console (80 columns when not a terminal)
    wide = console if console.width >= 120 else Console(width=120, highlight=False)
    wide.print(table)
    console.print(atlas.summary["message"], soft_wrap=True)


def _print_run(result: Any) -> None:
    print_modules(result.atlas)
    if result.chosen is not None:
        over = result.config.sweep.over
        console.print(f"Sparsity from the sweep: {over} = {result.chosen:g}.", soft_wrap=True)
    if result.skipped:
        console.print(f"Skipped (already complete): {', '.join(result.skipped)}.", soft_wrap=True)
    if result.report is not None:
        console.print(f"Report: {result.report}", soft_wrap=True, highlight=False)
    else:
        console.print(f"Atlas: {result.paths.atlas} (no report written).", soft_wrap=True)


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="Run config (YAML or JSON); see examples/*.yaml."),
    out: Path | None = typer.Option(
        None, "--out", help="Run directory (default: the config's `out`, else ./CONFIG-NAME-run)."
    ),
    check: bool = typer.Option(
        False, "--check", help="Only read and validate the config, then print it."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline from one config: capture, sweep, train, analyze, ablation,
    report. Stages whose output is already complete are skipped."""
    from .pipeline import load_run_config, run_pipeline

    cfg = load_run_config(config)
    if check:
        console.print(cfg.dumps(), highlight=False, soft_wrap=True)
        console.print(f"{config}: valid.", highlight=False)
        return
    if out is None and cfg.out is None:
        out = Path(f"{config.stem}-run")
    result = run_pipeline(cfg, out, progress=not quiet, on_stage=_print_stage)
    _print_run(result)


DEMO_MODELS = ("digits", "minilm")


@app.command("demo")
def demo_cmd(
    model: str = typer.Option(
        "digits", "--model", help="digits (an MLP on scikit-learn's digits) or minilm."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Directory for the demo's run (default: demo-out, or demo-out-minilm)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for training and sampling."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (the tests' size)."),
    n_texts: int = typer.Option(
        200, "--n-texts", help="minilm: docstring paragraphs in the corpus."
    ),
    max_length: int = typer.Option(64, "--max-length", help="minilm: tokens per text at most."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline on an embedded default: a network trained on scikit-learn's
    digits, or (--model minilm) all-MiniLM-L6-v2 reading Python's docstrings."""
    from .demo import run_demo, run_minilm_demo

    if model not in DEMO_MODELS:
        raise ConfigError(f"Unknown --model {model!r}; expected one of: {list(DEMO_MODELS)}.")
    if model == "digits":
        result = run_demo(
            out or Path("demo-out"),
            seed=seed,
            quick=quick,
            progress=not quiet,
            on_stage=_print_stage,
        )
    else:
        result = run_minilm_demo(
            out or Path("demo-out-minilm"),
            n_texts=n_texts,
            max_length=max_length,
            seed=seed,
            quick=quick,
            progress=not quiet,
            on_stage=_print_stage,
        )
        console.print(
            "No ablation: this MiniLM checkpoint is a sentence encoder without its "
            "language-model head, so there is no per-token loss to raise.",
            soft_wrap=True,
        )
    _print_run(result)


def main() -> None:
    """Entry point of the ``saeatlas`` script."""
    app()
