"""Commands on atlases: analyze, validate, report, and the tables they print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError
from .analyze_flags import (
    check_ablation_flags,
    check_null_dictionary_flag,
    check_out_is_no_seed_sae,
    check_run_sections,
    flag_facts,
)
from .app import app, console, on_rank_zero, with_config_flags
from .options import model_class_option, nonfinite_option, timeout_option
from .tables import fmt, print_atlas


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
        "members of the atlas's ensemble.",
    ),
    seeds: int = typer.Option(
        3,
        "--seeds",
        help="SAEs in the atlas's ensemble, counting --sae: the --seed-sae ones first, the "
        "rest trained like --sae into <sae>-seed1, -seed2, ... (reused when there, as "
        "`saeatlas train --seeds N` writes them). Modules count only when they reproduce "
        "across the ensemble.",
    ),
    sweep: Path | None = typer.Option(
        None,
        "--sweep",
        help="The sparsity sweep the SAE was chosen from (`saeatlas sweep --out`): how the "
        "modules change across its members (unit-module ARI between neighbouring values).",
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
    model_class: str = model_class_option(),
    loss: str = typer.Option(
        "cross-entropy",
        "--loss",
        help="The ablation's loss: 'cross-entropy' (a classifier, with --labels) or "
        "'next-token' (a causal language model).",
    ),
    ablation_draws: int | None = typer.Option(
        None,
        "--ablation-draws",
        help="Random unit sets per module for the ablation p-value (default: 100, or 20 "
        "per module above five modules, so that one module alone can pass the adjustment "
        "over the modules).",
    ),
    on_nonfinite: str = nonfinite_option(),
    timeout: float = timeout_option("writing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    **settings: Any,
) -> None:
    """Find modules of units and the feature communities behind them, with significance.

    Under `torchrun --nproc_per_node N -m saeatlas analyze ...` the ranks share the
    encoding and the draws and make the atlas one process makes; rank 0 writes it."""
    from .._config_cli import build_config
    from ..structure import AtlasConfig
    from ..structure.inputs import analysis_ranks

    cfg = build_config(AtlasConfig, config, settings, "analyze")
    check_null_dictionary_flag(settings, cfg)
    facts = {"--ablation-mode": ablation_mode, "--ablation-draws": ablation_draws, "--loss": loss}
    check_run_sections(config, seeds, model, facts, cfg.seed)
    analysis_ranks(
        cfg.device,
        timeout,
        lambda coord: _analyze(
            coord,
            sae=sae,
            acts=acts,
            out=out,
            cfg=cfg,
            overwrite=overwrite,
            seed_sae=seed_sae,
            seeds=seeds,
            sweep=sweep,
            model=model,
            model_class=model_class,
            inputs=inputs,
            labels=labels,
            ablation_mode=ablation_mode,
            loss=loss,
            ablation_draws=ablation_draws,
            on_nonfinite=on_nonfinite,
            quiet=quiet,
        ),
    )


def _analyze(
    coord: Any,
    *,
    sae: Path,
    acts: Path,
    out: Path,
    cfg: Any,
    overwrite: bool,
    seed_sae: list[Path],
    seeds: int,
    sweep: Path | None,
    model: str | None,
    model_class: str,
    inputs: Path | None,
    labels: Path | None,
    ablation_mode: str,
    loss: str,
    ablation_draws: int | None,
    on_nonfinite: str,
    quiet: bool,
) -> None:
    """The analysis and the ablation on every rank of ``coord`` (each ablates its share
    of the modules); rank 0 alone locks --out (from before the analysis until the atlas
    is saved), writes and prints."""
    from ..store import ActivationStore
    from ..store.lock import output_lock
    from ..structure import analyze
    from ..structure.atlas import check_atlas_out
    from ..structure.inputs import check_label_column
    from ..train.ensemble import MAX_SEEDS

    check_ablation_flags(model, inputs, labels, loss, ablation_draws, ablation_mode, model_class)
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(
            f"--seeds must be in [1, {MAX_SEEDS}] (SAEs in the ensemble, counting --sae), "
            f"got {seeds}."
        )
    if len(seed_sae) > seeds - 1:  # every one was used, and --seeds passed over
        raise ConfigError(
            f"--seed-sae gives {len(seed_sae)} SAE(s), but --seeds {seeds} counts "
            f"{seeds - 1} besides --sae; give --seeds {len(seed_sae) + 1}, or fewer --seed-sae."
        )
    main = coord.world.is_main
    with output_lock(out if main else None):
        coord.check(None)  # rank 0 holds the lock (or every rank stops)
        coord.agree(
            flag_facts(
                seeds,
                seed_sae,
                model,
                sweep,
                {
                    "--ablation-mode": ablation_mode,
                    "--ablation-draws": ablation_draws,
                    "--loss": loss,
                },
                out=out,
            ),
            "this analysis",
            "Give every rank the same flags.",
        )
        # rank 0 finishes an interrupted swap and checks; its verdict reaches every rank
        coord.from_main(lambda: check_atlas_out(out, overwrite))
        check_out_is_no_seed_sae(out, sae, seeds, seed_sae)
        store = ActivationStore.open(acts, on_nonfinite=on_nonfinite)
        check_label_column(cfg, store)  # before seed SAEs are trained
        ablation: dict = {}  # model, inputs and labels, checked before the work: every
        if model is not None:  # rank ablates its share of the modules
            error = None
            try:
                ablation.update(
                    _ablation_inputs(model, model_class, inputs, labels, loss, store, sae)
                )
            except Exception as e:
                error = e
            coord.check(error)
        members = None
        if sweep is not None:  # read before the work, like every other input
            from ..sweep.sweep import sweep_members

            members = sweep_members(sweep)
        if seeds > 1 and len(seed_sae) < seeds - 1:
            from ..structure.inference.seeds import train_seed_saes

            seed_sae = train_seed_saes(
                sae, store, seeds, given=seed_sae, progress=not quiet, coord=coord
            )
        atlas = analyze(sae, store, cfg, seed_saes=seed_sae, sweep=members, progress=not quiet)
        if sweep is not None:  # as the run records it: the report said "No sparsity sweep
            # found ...: the sparsity was chosen by hand" above the modules across it
            atlas.summary["sweep"] = str(sweep)
        if model is not None:
            from ..structure.causal.ablation import ablate_atlas

            ablate_atlas(
                atlas,
                store=store,
                mode=ablation_mode,
                n_random=ablation_draws,
                random_state=cfg.seed,
                progress=not quiet,
                **ablation,
            )
        if not main:  # the atlas is rank 0's to write
            return
        atlas.save(out, overwrite=overwrite)
    print_atlas(atlas)
    console.print(f"Written to {escape(str(out))}.", soft_wrap=True)


def _ablation_inputs(
    model: str,
    model_class: str,
    inputs: Path,
    labels: Path | None,
    loss: str,
    store: Any,
    sae: Path,
) -> dict[str, Any]:
    """The ablation's model, inputs, labels and loss (:func:`.ablate_atlas`'s arguments),
    loaded and checked against each other and the store (labels one per input, class
    indices of the model's logits, the SAE's layers in the model with the store's
    widths) before the analysis, not after it."""
    from ..capture import load_inputs, load_labels, load_model
    from ..losses import loss_function
    from ..sae import SparseAutoencoder
    from ..sae.model import sae_layers
    from ..structure.causal.ablation_inputs import (
        check_ablation_inputs,
        check_captured_model,
        check_store_labels,
    )

    loaded = load_model(model, model_class=model_class)
    kw = dict(
        labels=load_labels(labels) if labels else None,
        loss_fn=loss_function(loss),
        tokenizer=loaded.tokenizer,
        max_length=store.max_length,
    )
    x = load_inputs(inputs)
    layers = sae_layers(SparseAutoencoder.load(sae), store)
    check_ablation_inputs(loaded.model, x, layers=layers, output_index=store.output_index, **kw)
    check_captured_model(loaded.model, store)  # (after the checks that say what differs)
    check_store_labels(store, x, kw["labels"])
    return dict(model=loaded.model, inputs=x, **kw)


@app.command("validate")
@on_rank_zero
def validate_cmd(
    cases: list[str] = typer.Option(
        None,
        "--cases",
        help="Planted cases to run (several after one flag; default: every preset).",
    ),
    seeds: int = typer.Option(
        1,
        "--seeds",
        help="Analysis seeds per case (0, 1, ...): SAE training, resamples and nulls vary, "
        "the planted data stay the same.",
    ),
    rows: int = typer.Option(20_000, "--rows", help="Rows of planted activations per case."),
    d_sae: int = typer.Option(512, "--d-sae", help="Latents of the SAE trained per case."),
    tokens: int = typer.Option(
        400_000, "--tokens", help="Rows each SAE trains on (fewer: a quicker, rougher check)."
    ),
) -> None:
    """Run the atlas and its baselines on activations with planted modules; print the scores."""
    from ..structure.synthetic.config import CASES
    from ..structure.synthetic.validate import ValidationSettings, validate
    from ..train.ensemble import MAX_SEEDS

    # no seed is an empty table, not a validation; 10**9 built a list of as many seeds
    # until memory ran out (10**20: an OverflowError traceback), each a whole analysis
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(
            f"--seeds must be in [1, {MAX_SEEDS}] (analysis seeds per case), got {seeds}."
        )
    table = validate(
        tuple(cases or CASES),
        tuple(range(seeds)),
        ValidationSettings(n_rows=rows, d_sae=d_sae, tokens=tokens),
    )
    out = Table(title="Planted-structure validation (ARI against the planted unit modules)")
    heads = (
        "case",
        "seed",
        "method",
        "ARI",
        "modules",
        "significant",
        "planted found",
        "min reprod.",
        "ARI vs seed 0",
        "verdict",
        "s",
    )
    for col in heads:
        out.add_column(col, no_wrap=True)
    for r in table.itertuples():
        atlas_row = r.method == "atlas"
        out.add_row(
            r.case,
            str(r.seed),
            r.method,
            f"{r.ari:.3f}",
            str(r.n_modules),
            str(int(r.n_significant)) if atlas_row else "",
            str(r.planted_found) if atlas_row else "",
            fmt(r.min_reproducibility, ".2f") if atlas_row else "",
            fmt(r.ari_first_seed, ".3f") if atlas_row else "",
            str(r.verdict) if atlas_row else "",
            f"{r.seconds:.1f}",
        )
    # rich never prints wider than its console (80 columns when not a terminal)
    (console if console.width >= 160 else Console(width=160, highlight=False)).print(out)


@app.command("report")
@on_rank_zero
def report_cmd(
    atlas_dir: Path = typer.Argument(..., help="Atlas directory (what `saeatlas analyze` wrote)."),
    # text, not a Path, which would drop the '/' that makes `--out DIR/` a folder
    out: str | None = typer.Option(
        None,
        "--out",
        help="HTML file to write, or a folder (DIR/) to write report.html into "
        "[default: ATLAS_DIR/report.html].",
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
    from ..report import write_report

    result = write_report(atlas_dir, out, sweep_dir=sweep, max_map_points=max_map_points)
    console.print(escape(str(result.path)), soft_wrap=True, highlight=False)


def _register() -> None:
    from ..structure import AtlasConfig

    app.command("analyze")(with_config_flags(_analyze_cmd, AtlasConfig))


_register()
