"""Reading EleutherAI sparsify checkpoints as saeatlas SAEs (the format is described
in :mod:`saeatlas.sae.sparsify_format`)."""

from __future__ import annotations

from pathlib import Path

import torch

from .._validation import check_path_argument
from ..errors import AtlasError, ConfigError
from ..store.atomic import resolve
from ..store.lock import OutputError, output_kind, output_lock
from .files import CFG, WEIGHTS
from .io import check_sae_out
from .model import SparseAutoencoder
from .sparsify_format import hookpoint_name, is_sparsify_dir, read_sparsify, sparsify_hookpoints

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
    Without it, an SAE already there that is this import of its hookpoint (the same
    config and weights: an import killed half-way, run again) is kept, not refused.

    Returns ``{hookpoint: directory}``.
    """
    folders = sparsify_hookpoints(src)
    check_path_argument("out", out)  # a number or None ended in pathlib's TypeError
    out = Path(out)
    single = len(folders) == 1 and is_sparsify_dir(src)
    targets = {folder: out if single else out / folder.name for folder in folders}
    for folder, target in targets.items():
        if resolve(target).is_relative_to(resolve(folder)):
            # the SAE in the source's place was taken for this import done already
            # ("Imported ...", nothing written), or the SAEs went into the checkpoint
            raise ConfigError(
                f"--out '{out}' would put the SAE of '{folder}' at '{target}', inside the "
                "sparsify checkpoint being imported. Choose an --out outside it."
            )
    what = None if single or not out.is_dir() else output_kind(out)
    if what is not None:
        # its SAEs went into the store, SAE or atlas as folders of their own, and that
        # output's next --overwrite deleted them (or refused)
        raise OutputError(
            f"'{out}' is {what}, which must hold only its own files, but a sparsify run's "
            f"SAEs are written into --out as '<hookpoint>' folders; choose a folder that is "
            "not a saeatlas output."
        )
    # a run's --out is a folder of SAEs: importing it again was refused as a folder that
    # holds outputs. One import at a time: two could mix their hookpoints.
    with output_lock(out, holds_outputs=not single):
        done = {f for f, t in targets.items() if not overwrite and _imported(f, t)}
        for folder, target in targets.items():  # one SAE in memory at a time: read twice
            if folder not in done:  # (those done were read whole by _imported)
                read_sparsify(folder)
                check_sae_out(target, overwrite=overwrite, resume=False)
        return {
            hookpoint_name(folder): target
            if folder in done
            else load_sparsify(folder).save(target, overwrite=overwrite)
            for folder, target in targets.items()
        }


def _imported(folder: Path, target: Path) -> bool:
    """Whether ``target`` holds this import of ``folder`` already (a rerun of an import
    killed after some hookpoints was refused as "already holds an SAE")."""
    if not (target / CFG).is_file() or not (target / WEIGHTS).is_file():
        return False  # a sparsify folder there is no import of it
    try:
        there = SparseAutoencoder.load(target)
    except AtlasError:  # refused as it is, by check_sae_out
        return False
    new = load_sparsify(folder)
    return there.cfg == new.cfg and all(
        torch.equal(a, b) for a, b in zip(there.state_dict().values(), new.state_dict().values())
    )
