"""Reading EleutherAI sparsify checkpoints as saeatlas SAEs (the format is described
in :mod:`saeatlas.sae.formats`)."""

from __future__ import annotations

from pathlib import Path

from .formats import is_sparsify_dir, read_sparsify, sparsify_hookpoints
from .model import SparseAutoencoder

__all__ = ["import_sparsify", "is_sparsify_dir", "load_sparsify", "sparsify_hookpoints"]


def load_sparsify(path: str | Path) -> SparseAutoencoder:
    """Read one sparsify hookpoint folder as a :class:`SparseAutoencoder` (eval mode).

    The folder's name becomes the SAE's layer name (sparsify names folders after
    the hookpoint: a ``named_modules()`` path of the model it was trained on).
    """
    return SparseAutoencoder.from_weights(*read_sparsify(path))


def import_sparsify(src: str | Path, out: str | Path) -> dict[str, Path]:
    """Write every SAE of a sparsify checkpoint (a hookpoint folder or a run folder) as a
    saeatlas SAE directory ``out/<hookpoint>`` (``out`` itself for one hookpoint folder).

    Returns ``{hookpoint: directory}``.
    """
    folders = sparsify_hookpoints(src)
    out = Path(out)
    single = len(folders) == 1 and is_sparsify_dir(src)
    written: dict[str, Path] = {}
    for folder in folders:
        sae = load_sparsify(folder)
        written[folder.name] = sae.save(out if single else out / folder.name)
    return written
