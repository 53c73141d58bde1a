"""Whole runs: run (one config file) and demo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from .._world import is_main_process
from ..errors import ConfigError
from .app import app, console
from .options import timeout_option
from .tables import print_modules

log = logging.getLogger(__name__)


def _print_stage(outcome: Any) -> None:
    """One line per pipeline stage, as it happens."""
    mark = {"ran": "[green]ran[/]", "skipped": "[yellow]skipped[/]", "off": "[dim]off[/]"}
    took = f" in {outcome.seconds:.1f} s" if outcome.status == "ran" else ""
    console.print(
        f"[bold]{outcome.name}[/] {mark.get(outcome.status, outcome.status)}{took}: "
        f"{escape(outcome.reason)}",
        soft_wrap=True,
        highlight=False,
    )


def _print_run(result: Any) -> None:
    print_modules(result.atlas)
    if result.chosen is not None:
        over = result.config.sweep.over
        console.print(f"Sparsity from the sweep: {over} = {result.chosen:g}.", soft_wrap=True)
    if result.skipped:
        console.print(f"Skipped (already complete): {', '.join(result.skipped)}.", soft_wrap=True)
    if result.report is not None:
        console.print(f"Report: {escape(str(result.report))}", soft_wrap=True, highlight=False)
    else:
        console.print(
            f"Atlas: {escape(str(result.paths.atlas))} (no report written).", soft_wrap=True
        )


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="Run config (YAML or JSON); see examples/*.yaml."),
    out: str | None = typer.Option(
        None, "--out", help="Run directory (default: the config's `out`, else ./CONFIG-NAME-run)."
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Only validate: read the config, then dry-run the model on the first input batch "
        "(layer names, widths, sparsity values) and print it.",
    ),
    timeout: float = timeout_option("report"),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace outputs in --out that an earlier run made with other settings "
        "(without it the run stops and names the settings that differ).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline from one config: capture, sweep, train, analyze, ablation,
    report. Stages whose output is already complete are skipped.

    Under `torchrun --nproc_per_node N -m saeatlas run ...` capture, sweep, train and
    analyze run on every rank (as each does on its own); rank 0 writes, ablates and
    reports."""
    from .._config_cli import given_settings
    from ..pipeline import load_run_config, run_pipeline
    from ..pipeline.outputs import run_dir_path

    run_dir = run_dir_path(out)
    cfg = load_run_config(config)
    for unread in cfg.unread_train_settings(given_settings(config, {}, "train")):
        log.warning("%s.", unread)
    if run_dir is None and cfg.out is None:
        run_dir = Path(f"{config.stem}-run")
    if check:
        from ..pipeline.check import check_run

        dry = check_run(cfg, run_dir, timeout, overwrite)
        if is_main_process():  # under torchrun rank 0 says what the check found
            console.print(escape(cfg.dumps()), highlight=False, soft_wrap=True)
            console.print(
                f"{escape(str(config))}: valid ({escape(dry)}).", highlight=False, soft_wrap=True
            )
        return
    result = run_pipeline(
        cfg,
        run_dir,
        progress=not quiet,
        on_stage=_print_stage,
        timeout_s=timeout,
        overwrite=overwrite,
    )
    if is_main_process():  # under torchrun rank 0 says what the run did
        _print_run(result)


DEMO_MODELS = ("digits", "minilm")


@app.command("demo")
def demo_cmd(
    ctx: typer.Context,
    model: str = typer.Option(
        "digits", "--model", help="digits (an MLP on scikit-learn's digits) or minilm."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Directory for the demo's run (default: demo-out, or demo-out-minilm)."
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seed of the analysis: SAE training, bootstraps, null and ablation draws. The "
        "network stays the same one, so two seeds are two analyses of one network.",
    ),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (the tests' size)."),
    n_texts: int = typer.Option(
        200, "--n-texts", help="minilm: docstring paragraphs in the corpus."
    ),
    max_length: int = typer.Option(64, "--max-length", help="minilm: tokens per text at most."),
    timeout: float = timeout_option(),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace outputs in --out that an earlier demo made with other settings (another "
        "--seed, --quick, ...).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole pipeline on an embedded default: a network trained on scikit-learn's
    digits, or (--model minilm) all-MiniLM-L6-v2 reading Python's docstrings."""
    from ..demo import run_demo, run_minilm_demo
    from ..pipeline.outputs import run_dir_path
    from ..structure.config import MAX_SEED

    if model not in DEMO_MODELS:
        raise ConfigError(f"Unknown --model {model!r}; expected one of: {list(DEMO_MODELS)}.")
    # refused by the config naming `seed` (of [0, 4294967295]), `n_texts` or `max_length`,
    # no flag; 10**20 as "`seed` must be an integer of at most 64 bits"
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(
            f"--seed must be in [0, {MAX_SEED}] (it seeds the SAEs, resamples and nulls), got "
            f"{seed}."
        )
    given = {p: getattr(ctx.get_parameter_source(p), "name", "") for p in ("n_texts", "max_length")}
    texts = [f"--{p.replace('_', '-')}" for p, how in given.items() if how == "COMMANDLINE"]
    if model == "digits" and texts:  # read only by the minilm demo: dropped without a word
        raise ConfigError(
            f"{' and '.join(texts)} appl{'ies' if len(texts) == 1 else 'y'} to --model minilm "
            f"only; the digits demo reads images, not texts. Drop {' and '.join(texts)}, or "
            "pass --model minilm."
        )
    for flag, value in (("--n-texts", n_texts), ("--max-length", max_length)):
        if value < 1:
            raise ConfigError(f"{flag} must be 1 or more, got {value}.")
    run_dir = run_dir_path(out)
    if model == "digits":
        result = run_demo(
            run_dir or Path("demo-out"),
            seed=seed,
            quick=quick,
            progress=not quiet,
            on_stage=_print_stage,
            timeout_s=timeout,
            overwrite=overwrite,
        )
    else:
        result = run_minilm_demo(
            run_dir or Path("demo-out-minilm"),
            n_texts=n_texts,
            max_length=max_length,
            seed=seed,
            quick=quick,
            progress=not quiet,
            on_stage=_print_stage,
            timeout_s=timeout,
            overwrite=overwrite,
        )
    if not is_main_process():  # under torchrun rank 0 says what the run did
        return
    if model == "minilm":
        console.print(
            "No ablation: this MiniLM checkpoint is a sentence encoder without its "
            "language-model head, so there is no per-token loss to raise.",
            soft_wrap=True,
        )
    _print_run(result)
