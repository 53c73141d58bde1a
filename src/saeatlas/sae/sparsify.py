"""Reading EleutherAI sparsify checkpoints as saeatlas SAEs (the format is described
in :mod:`saeatlas.sae.sparsify_format`)."""

from __future__ import annotations

from pathlib import Path

from ..store.lock import output_lock
from .io import check_sae_out
from .model import SparseAutoencoder
from .sparsify_format import is_sparsify_dir, read_sparsify, sparsify_hookpoints

__all__ = ["import_sparsify", "is_sparsify_dir", "load_sparsify", "sparsify_hookpoints"]


def load_sparsify(path: str | Path) -> SparseAutoencoder:
    """Read one sparsify hookpoint folder as a :class:`SparseAutoencoder` (eval mode).

    The folder's name becomes the SAE's layer name (sparsify names folders after
    the hookpoint: a ``named_modules()`` path of the model it was trained on).
    """
    return SparseAutoencoder.from_weights(*read_sparsify(path))


def import_sparsify(
    src: str | Path, out: str | Path, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write every SAE of a sparsify checkpoint (a hookpoint folder or a run folder) as a
    saeatlas SAE directory ``out/<hookpoint>`` (``out`` itself for one hookpoint folder).

    Every folder is read and every output checked before anything is written, so a
    broken hookpoint leaves no partial import; ``overwrite`` replaces SAEs already there.

    Returns ``{hookpoint: directory}``.
    """
    folders = sparsify_hookpoints(src)
    out = Path(out)
    single = len(folders) == 1 and is_sparsify_dir(src)
    targets = {folder: out if single else out / folder.name for folder in folders}
    with output_lock(out):  # one import at a time: two could mix their hookpoints
        for folder, target in targets.items():  # one SAE in memory at a time: read twice
            read_sparsify(folder)
            check_sae_out(target, overwrite=overwrite, resume=False)
        return {
            folder.name: load_sparsify(folder).save(target, overwrite=overwrite)
            for folder, target in targets.items()
        }
