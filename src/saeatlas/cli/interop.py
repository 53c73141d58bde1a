"""Commands that move SAEs and atlases to and from other tools: import-sparsify,
export-neuronpedia."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .app import app, console


@app.command("import-sparsify")
def import_sparsify_cmd(
    src: Path = typer.Argument(
        ...,
        help="A sparsify checkpoint: one hookpoint folder (cfg.json + sae.safetensors) or a "
        "run folder holding such folders.",
    ),
    out: Path = typer.Option(
        ..., "--out", help="saeatlas SAE directory to write (one subfolder per hookpoint for a run)."
    ),
) -> None:
    """Convert EleutherAI sparsify SAEs into saeatlas SAE directories."""
    from ..sae.sparsify import import_sparsify

    written = import_sparsify(src, out)
    for hookpoint, path in written.items():
        console.print(f"Imported sparsify SAE '{escape(hookpoint)}' to {escape(str(path))}.")
