"""Commands that move SAEs and atlases to and from other tools: import-sparsify,
export-neuronpedia."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .app import app, check_model_only, console, on_rank_zero
from .options import model_class_option


@app.command("import-sparsify")
@on_rank_zero
def import_sparsify_cmd(
    src: Path = typer.Argument(
        ...,
        help="A sparsify checkpoint: one hookpoint folder (cfg.json + sae.safetensors) or a "
        "run folder holding such folders.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="saeatlas SAE directory to write (one subfolder per hookpoint for a run).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace SAEs already there."),
) -> None:
    """Convert EleutherAI sparsify SAEs into saeatlas SAE directories."""
    from ..sae.sparsify import import_sparsify

    written = import_sparsify(src, out, overwrite=overwrite)
    for hookpoint, path in written.items():
        console.print(f"Imported sparsify SAE '{escape(hookpoint)}' to {escape(str(path))}.")


@app.command("export-neuronpedia")
@on_rank_zero
def export_neuronpedia_cmd(
    atlas: Path = typer.Argument(..., help="An atlas directory (from `saeatlas analyze`)."),
    out: Path = typer.Option(..., "--out", help="Directory for the batch-<i>.json files."),
    sae: Path | None = typer.Option(
        None, "--sae", help="The SAE the atlas was made from (default: the one atlas.json names)."
    ),
    acts: Path | None = typer.Option(
        None, "--acts", help="Its activation store (default: the one atlas.json names)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model SPEC with an unembedding, for each feature's top logits (an SAE of one "
        "residual-stream layer).",
    ),
    model_class: str = model_class_option(),
    sae_set: str = typer.Option(
        "saeatlas", "--sae-set", help="Neuronpedia's name for the SAE set."
    ),
    n_examples: int = typer.Option(20, "--n-examples", help="Top activations per feature."),
    features_per_batch: int = typer.Option(
        128, "--features-per-batch", help="Features per batch-<i>.json file."
    ),
    layer: int | None = typer.Option(
        None,
        "--layer",
        help="Neuronpedia's layer number (default: the block index in the layer's name, "
        "such as 3 in blocks.3.mlp).",
    ),
) -> None:
    """Write an atlas's features in Neuronpedia's batch-upload layout (as SAEDashboard does)."""
    from ..export import NeuronpediaConfig, export_neuronpedia

    # the settings before the model is loaded (a large one takes minutes)
    check_model_only(
        model, {"--model-class": model_class != "auto"}, "the features' logits", "--model"
    )
    config = NeuronpediaConfig(
        sae_set=sae_set, n_examples=n_examples, features_per_batch=features_per_batch, layer=layer
    )
    loaded = None
    if model is not None:
        from ..capture import load_model

        loaded = load_model(model, model_class=model_class)
    written = export_neuronpedia(
        atlas,
        out,
        sae=sae,
        store=acts,
        model=loaded.model if loaded else None,
        tokenizer=loaded.tokenizer if loaded else None,
        config=config,
    )
    console.print(f"Wrote {len(written)} Neuronpedia batch file(s) to {escape(str(out))}.")
