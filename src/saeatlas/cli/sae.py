"""Commands on sparse autoencoders: train, evaluate, import-saelens, export-saelens, sweep."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .._world import is_main_process
from .app import app, check_model_flags, console, on_rank_zero, with_config_flags
from .options import model_class_option, nonfinite_option, timeout_option

log = logging.getLogger(__name__)


def _train_cmd(
    acts: Path = typer.Option(..., "--acts", help="Activation store directory or .npy file."),
    out: Path = typer.Option(..., "--out", help="SAE directory to write."),
    seeds: int = typer.Option(
        3,
        "--seeds",
        help="SAEs to train, one per seed: --seed S into --out, S+1, S+2, ... into "
        "OUT-seed1, OUT-seed2, ... (what `saeatlas analyze --seeds` reuses); 1: only --out.",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML/JSON file of training settings; flags given here override it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace SAEs already there."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue each SAE from its checkpoint, keep complete ones, train the rest "
        "(with --overwrite, also those whose checkpoint or SAE has other settings).",
    ),
    on_nonfinite: str = nonfinite_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **settings: Any,
) -> None:
    """Train a sparse autoencoder on an activation store (by default three, one per seed,
    from the same batches)."""
    from .._config_cli import build_config, given_settings
    from ..store import ActivationStore
    from ..train import TrainConfig, train_ensemble
    from ..train.config import unread_settings

    cfg = build_config(TrainConfig, config, settings, "train")
    for unread in unread_settings(cfg, given_settings(config, settings, "train")):
        log.warning("%s (--architecture, --optimizer).", unread)
    store = ActivationStore.open(acts, on_nonfinite=on_nonfinite)
    ensemble = train_ensemble(
        store, cfg, out, seeds, overwrite=overwrite, resume=resume, progress=not quiet
    )
    if not is_main_process():  # under torchrun rank 0 writes and says so
        return
    for result, trained in zip(ensemble.results, ensemble.trained):
        final, sae_cfg = result.summary["final"], result.sae.cfg
        seed = f" with seed {result.summary['train_config']['seed']}" if seeds > 1 else ""
        what = (
            f"Trained a {sae_cfg.architecture} SAE ({sae_cfg.d_in} -> {sae_cfg.d_sae}){seed} on "
            f"{result.summary['tokens']:,} rows"
            if trained
            else f"Kept the complete {sae_cfg.architecture} SAE{seed}"
        )
        console.print(
            f"{what}: FVU {final['fvu']:.4f}, L0 {final['l0']:.1f}, "
            f"{_dead_text(final['dead_fraction'], result.summary)}. "
            f"{'Saved to' if trained else 'In'} {escape(str(result.path))}.",
            soft_wrap=True,
        )


def _dead_text(fraction: float, summary: dict) -> str:
    """The dead fraction, or why there is none: a latent is dead when it has not fired
    in the last ``dead_window`` rows, which a shorter run never reaches (it printed
    "dead 0.0%" where evaluate counted 31% of latents firing on no row)."""
    window = summary.get("train_config", {}).get("dead_window")
    if isinstance(window, int) and summary.get("tokens", window) < window:
        return (
            f"dead not measured (the run is shorter than --dead-window, {window:,} rows; "
            "`saeatlas evaluate` counts the latents that fire on no row)"
        )
    return f"dead {fraction:.1%}"


@app.command("evaluate")
def evaluate_cmd(
    sae: Path = typer.Option(..., "--sae", help="SAE directory."),
    acts: Path = typer.Option(..., "--acts", help="Activation store directory or .npy file."),
    start: int = typer.Option(
        0,
        "--start",
        help="First row to evaluate on (e.g. held-out rows); with --on-nonfinite skip, rows "
        "are counted without those left out, as --heldout-rows counts them.",
    ),
    stop: int | None = typer.Option(None, "--stop", help="One past the last row (default: all)."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Rows per batch."),
    device: str = typer.Option("cpu", "--device", help="Device (cpu, cuda)."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model SPEC: with --inputs (and --labels for a classifier), also the downstream "
        "loss recovered.",
    ),
    inputs: Path | None = typer.Option(None, "--inputs", help="Inputs for the downstream loss."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels for the cross-entropy loss of a classifier."
    ),
    model_class: str = model_class_option(),
    loss: str = typer.Option(
        "cross-entropy",
        "--loss",
        help="The model's loss: 'cross-entropy' (a classifier, with --labels) or "
        "'next-token' (a causal language model).",
    ),
    on_nonfinite: str = nonfinite_option(),
    timeout: float = timeout_option(),
) -> None:
    """Reconstruction and sparsity metrics of an SAE on a store's rows; with --model,
    the fraction of the model's loss its reconstruction recovers.

    Under `torchrun` the ranks share the rows out and rank 0 prints (and measures the
    loss recovered)."""
    from ..evaluate import evaluate_sae
    from ..sae import SparseAutoencoder
    from ..store import ActivationStore

    check_model_flags(model, inputs, labels, loss, "the downstream loss", model_class=model_class)
    from .._validation import check_device

    check_device("device", device, flag="--device")
    loaded_sae = SparseAutoencoder.load(sae)
    store = ActivationStore.open(acts, on_nonfinite=on_nonfinite)
    loaded = None
    if model is not None:  # before the work: the loss of another network is not the SAE's
        from ..capture import load_model
        from ..structure.causal.ablation_inputs import check_captured_model

        loaded = load_model(model, model_class=model_class)
        check_captured_model(loaded.model, store, transfer=True)
    result = evaluate_sae(
        loaded_sae,
        store,
        start=start,
        stop=stop,
        batch_size=batch_size,
        device=device,
        timeout_s=timeout,
    )
    if not is_main_process():  # the other ranks encoded their share of the rows
        return
    table = Table("metric", "value")
    stop_at = store.n_rows if stop is None else stop
    for key, value in result.as_dict().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else f"{value:.4f}")
    if loaded is not None:
        from ..capture import load_inputs, load_labels
        from ..evaluate import loss_recovered
        from ..losses import loss_function

        down = loss_recovered(
            loaded_sae,
            loaded.model,
            load_inputs(inputs),
            loss_function(loss),
            tokenizer=loaded.tokenizer,
            max_length=store.max_length,
            output_index=store.output_index,
            labels=load_labels(labels) if labels else None,
            device=device if device != "cpu" else None,
        )
        for key, text in down.table_rows():
            table.add_row(key, text)
    console.print(table)
    if loaded is not None and down.note() is not None:  # was a ratio of two negatives
        console.print(down.note(), soft_wrap=True)
    if store.n_skipped_rows:  # rows are counted without them, as --heldout-rows counts
        sample = store.rows(["sample"]).column("sample").to_numpy()
        first, last = int(sample[start]), int(sample[stop_at - 1]) + 1
        console.print(
            f"Rows {start:,}..{stop_at:,} are counted without the {store.n_skipped_rows:,} "
            f"rows with NaN/Inf that --on-nonfinite skip left out: they are rows "
            f"{first:,}..{last:,} of {escape(str(acts))}, {last - first - result.n_rows:,} "
            "of them left out.",
            soft_wrap=True,
        )
    if model is not None:  # two sets of data: say which figure comes from which
        console.print(
            f"Reconstruction on rows {start:,}..{stop_at:,} of the store; the loss on every "
            f"input of {escape(str(inputs))} ({down.n_samples:,} samples).",
            soft_wrap=True,
        )
    counts, edges = result.density_histogram(bins=8)
    console.print(
        "log10 firing density of live latents: "
        + ", ".join(f"[{a:.1f},{b:.1f}): {c}" for a, b, c in zip(edges[:-1], edges[1:], counts)),
        soft_wrap=True,
    )


@app.command("import-saelens")
@on_rank_zero
def import_saelens_cmd(
    src: Path = typer.Argument(
        ..., help="A SAELens SAE directory (cfg.json + sae_weights.safetensors)."
    ),
    out: Path = typer.Option(..., "--out", help="saeatlas SAE directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an SAE already there."),
) -> None:
    """Convert a SAELens SAE directory into a saeatlas one."""
    from ..errors import ConfigError
    from ..sae.saelens import load_saelens
    from ..store.sources import dir_identity

    if dir_identity(out) is not None and dir_identity(out) == dir_identity(src):
        # "already holds an SAE ... pass --overwrite", which replaced the SAELens SAE being
        # imported with its conversion (as export-saelens and import-sparsify refuse)
        raise ConfigError(
            f"--out '{out}' is the SAELens SAE being imported ('{src}'): the import would "
            "replace it. Choose another --out."
        )
    sae = load_saelens(src)
    sae.save(out, overwrite=overwrite)
    console.print(
        f"Imported a {sae.cfg.architecture} SAE ({sae.cfg.d_in} -> {sae.cfg.d_sae}) to "
        f"{escape(str(out))}."
    )


@app.command("export-saelens")
@on_rank_zero
def export_saelens_cmd(
    sae: Path = typer.Argument(..., help="A saeatlas SAE directory."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="SAELens SAE directory to write (one subfolder per layer of a joint SAE).",
    ),
    acts: Path | None = typer.Option(
        None,
        "--acts",
        help="The store the SAE was trained on, for SAELens's metadata (hook_name, model_name, "
        "context_size, ...); by default the one recorded in the SAE.",
    ),
) -> None:
    """Write a saeatlas SAE as SAELens directories (SAE.load_from_disk reads them)."""
    from ..sae import SparseAutoencoder
    from ..sae.saelens import export_saelens

    written = export_saelens(SparseAutoencoder.load(sae), out, store=acts)
    for hook, path in written.items():
        what = f" (hook '{escape(hook)}')" if hook else ""
        console.print(
            f"Exported {escape(str(sae))}{what} to {escape(str(path))} in SAELens's format."
        )


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
    extend: int = typer.Option(
        3,
        "--extend",
        help="Times the range may be extended past an end (half the smallest, twice the "
        "largest value) while the knee lies at that end; 0: never.",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML/JSON file of training settings; flags given here override it."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a sweep at --out."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue a killed sweep: keep each member it finished (same settings and rows, "
        "files that load), train the rest.",
    ),
    on_nonfinite: str = nonfinite_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **settings: Any,
) -> None:
    """Train a family of SAEs over a sparsity setting and recommend one (Pareto knee).

    Under `torchrun --nproc_per_node N -m saeatlas sweep ...` every member trains
    data-parallel, as `train` does; the ranks share the held-out evaluation and rank 0
    writes the sweep."""
    from .._config_cli import build_config, given_settings, unread_section
    from ..errors import ConfigError
    from ..sae.architectures import ARCHITECTURES
    from ..store import ActivationStore
    from ..sweep import sweep
    from ..sweep.settings import check_sweep_values, check_swept_setting
    from ..train import TrainConfig

    # Every member sets --over itself; the base takes the first value, so that the
    # default of the swept setting (k 32) is not checked against a smaller --d-sae.
    check_sweep_values(over, values)
    if settings.get(over) is not None:  # each member's comes from --values
        flag = "--" + over.replace("_", "-")
        raise ConfigError(
            f"{flag} {settings[over]:g} is not read by sweep --over {over}: every member sets "
            f"`{over}` from --values. Drop {flag}, or give its value in --values."
        )
    if settings.get("heldout_rows") is not None:  # each member's is the held-out fraction's
        raise ConfigError(
            "--heldout-rows is not read by sweep: it holds out the last --heldout-fraction "
            f"of the store ({heldout_fraction:g}) for every member and evaluates them there. "
            "Drop --heldout-rows, or set --heldout-fraction."
        )
    # before the members' settings: sweeping l1_coefficient of a topk SAE was refused as
    # its default `k` above --d-sae ("Lower `k` (--k)"), a setting the sweep does not read
    in_file = given_settings(config, {}, "train")
    unread_section(config, "sweep", "sweep", {"over": over, "values": values, "seeds": seeds})
    arch = settings.get("architecture") or in_file.get("architecture", TrainConfig.architecture)
    if arch in ARCHITECTURES:
        check_swept_setting(arch, over)
    # Every member's settings are checked here, so that a value out of the setting's
    # range is named as one of --values (the flag given), not as the swept setting's flag.
    members = []
    for value in values:
        try:
            members.append(build_config(TrainConfig, config, {**settings, over: value}, "train"))
        except ConfigError as e:
            own = "--" + over.replace("_", "-")
            raise ConfigError(re.sub(rf"{own}(?![a-z-])", "--values", str(e))) from None
    base = members[0]
    from ..train.config import unread_settings

    # as the flags are refused above; a run config's `train` may hold them (`heldout_rows`
    # of 300 was passed over without a word: every member held out 10% of the rows)
    for name, source in ((over, "--values"), ("heldout_rows", "--heldout-fraction")):
        if name in in_file:
            said = f"`{name}: {in_file[name]}` in {config} is not read by sweep --over {over}"
            log.warning("%s: every member takes its %s from %s.", said, name, source)
    given = set(given_settings(config, settings, "train")) - {over}
    for unread in unread_settings(base, given):
        log.warning("%s (--architecture, --optimizer).", unread)
    result = sweep(
        ActivationStore.open(acts, on_nonfinite=on_nonfinite),
        base,
        over,
        values,
        out,
        seeds=seeds,
        heldout_fraction=heldout_fraction,
        extend=extend,
        overwrite=overwrite,
        resume=resume,
        progress=not quiet,
    )
    if not is_main_process():  # under torchrun rank 0 writes and says so
        return
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
    if result.extended:
        added = ", ".join(f"{v:g}" for v in result.extended)
        console.print(f"The knee lay at an end of the range: added {over} = {added}.")
    if result.note:
        console.print(escape(result.note), soft_wrap=True)
    console.print(
        f"Rule: {escape(result.rule)}. Written to {escape(str(out / 'sweep.json'))}.",
        soft_wrap=True,
    )


def _register() -> None:
    from ..train import TrainConfig

    app.command("train")(with_config_flags(_train_cmd, TrainConfig))
    app.command("sweep")(with_config_flags(_sweep_cmd, TrainConfig))


_register()
