"""Reading and writing SAE directories (README, "Sparse autoencoders"; names follow SAELens).

SAE_DIR/cfg.json                  architecture, sizes, layer map, training summary
SAE_DIR/sae_weights.safetensors   W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec,
                                  threshold [d_sae] (JumpReLU, BatchTopK)

Functions here move ``(SAEConfig, weights)`` pairs, never the module:
:class:`~saeatlas.sae.model.SparseAutoencoder` builds itself from them in
``load`` and gives them in ``save``.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save

from .._validation import check_flag_argument, check_path_argument
from ..errors import AtlasError, ConfigError
from ..store.atomic import (
    atomic_write_bytes,
    check_output_dir,
    finish_swap_for_reader,
    recover_dir,
    replacing_dir,
)
from ..store.lock import output_lock
from ..store.sources import dir_identity
from .config import SAEConfig
from .files import CFG, SAE_EXTRAS, WEIGHTS, SAEFileError, sae_folder_hint
from .formats import (
    Weights,
    check_row_transforms,
    checked_weights,
    is_saelens_cfg,
    read_cfg,
    read_saelens,
    read_tensors,
    weight_shapes,
)
from .sparsify_format import is_sparsify_dir, read_sparsify, run_message

__all__ = [
    "CFG",
    "SAE_EXTRAS",
    "WEIGHTS",
    "SAEFileError",
    "check_sae_out",
    "read_sae",
    "write_sae",
]


def write_sae(
    cfg: SAEConfig,
    weights: Weights,
    path: str | Path,
    *,
    files: dict[str, bytes] | None = None,
    keep: tuple[str, ...] = (),
    overwrite: bool = True,
) -> Path:
    """Write an SAE to the directory ``path``, replacing what is there in one step.

    The directory is filled beside ``path`` and renamed into place
    (:func:`~saeatlas.store.atomic.replacing_dir`), holding ``path``'s lock.

    Args:
        weights: the tensors of ``sae_weights.safetensors``.
        files: more files to write into the directory (name -> bytes).
        keep: entries of the directory now at ``path`` to move into the new one
            (a run's ``tensorboard`` folder).
        overwrite: replace a complete SAE at ``path``; when false, refuse to.
    """
    # a number ended in pathlib's TypeError, and overwrite="no" was read by its truth
    check_path_argument("path", path)
    check_flag_argument("overwrite", overwrite)
    path = Path(path)
    # what every reader checks, before anything is written: NaN weights were saved into an
    # SAE that no reader accepts (so was a metadata key given twice, 1 and "1")
    checked_weights(f"The SAE to save to '{path}'", weights, weight_shapes(cfg), dtype=cfg.dtype)
    cfg.dumps()
    _check_extras(files or {}, keep)
    with output_lock(path):
        check_sae_out(path, overwrite=overwrite, resume=False)  # never replaces others' files
        with replacing_dir(path) as new:
            _write_files(cfg, weights, new)
            for name, data in (files or {}).items():
                atomic_write_bytes(new / name, data)
            for name in keep:
                if (path / name).exists():
                    os.replace(path / name, new / name)
    return path


def _check_extras(files: dict[str, bytes], keep: tuple[str, ...]) -> None:
    """``files`` and ``keep`` name only what an SAE directory may hold besides its own two
    files (:data:`SAE_EXTRAS`), and ``files`` holds bytes: `cfg.json` was replaced by the
    bytes given, '../x' was written beside the SAE, another name made a directory that
    the next save refused as not an SAE's, and text ended in a TypeError."""
    if not isinstance(files, dict) or not isinstance(keep, (tuple, list)):
        raise ConfigError("`files` must be a dict of name -> bytes, and `keep` a tuple of names.")
    for name in [*files, *keep]:
        if name not in SAE_EXTRAS:
            raise ConfigError(
                f"`files` and `keep` name what an SAE directory holds besides {CFG} and "
                f"{WEIGHTS} (which save writes itself): one of {list(SAE_EXTRAS)}, got "
                f"{name!r}."
            )
    for name, data in files.items():
        if not isinstance(data, bytes):
            raise ConfigError(f"`files[{name!r}]` must be bytes, got {type(data).__name__}.")


def _write_files(cfg: SAEConfig, weights: Weights, path: Path) -> None:
    tensors = {k: v.to("cpu").contiguous() for k, v in weights.items()}
    atomic_write_bytes(path / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(path / CFG, cfg.dumps().encode())


def check_sae_out(path: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to write an SAE to ``path`` when that would lose something: a complete
    SAE (without ``overwrite``), an interrupted run (without ``resume`` or
    ``overwrite``), or files that are not an SAE's. Call it holding ``path``'s lock: it
    first finishes a swap of ``path`` that a kill interrupted (:func:`recover_dir`)."""
    recover_dir(path)
    ours = {CFG, WEIGHTS, *SAE_EXTRAS}
    check_output_dir(path, "an SAE", "an SAE's", CFG, lambda p: p.name in ours, overwrite)
    if (path / "checkpoint.pt").exists() and not (resume or overwrite):
        raise ConfigError(
            f"'{path}' holds an interrupted training run. Pass --resume to continue it, or "
            "--overwrite to start again."
        )


def read_sae(path: str | Path) -> tuple[SAEConfig, Weights]:
    """Read an SAE directory written by saeatlas, by SAELens, or one hookpoint folder
    of a sparsify checkpoint, as its config and weights (checked against each other).
    A saeatlas SAE that a kill left beside ``path`` in its swap is put in place first."""
    check_path_argument("path", path)  # a number or None ended in pathlib's TypeError
    path = Path(path)
    finish_swap_for_reader(path)
    identity = dir_identity(path)  # a training's --overwrite swaps in another directory
    read = _read_files(path)
    if dir_identity(path) != identity:  # cfg.json of one SAE, the weights of another
        raise SAEFileError(
            f"The SAE at '{path}' was replaced (another `saeatlas train --overwrite`) while "
            "it was read; read it again once that training is done."
        )
    return read


def _read_files(path: Path) -> tuple[SAEConfig, Weights]:
    if is_sparsify_dir(path) and not (path / WEIGHTS).is_file():
        return read_sparsify(path)
    if not (path / CFG).is_file() and path.is_dir():
        message = run_message(path)
        if message is not None:
            raise SAEFileError(message)
    if not (path / CFG).is_file() and (path / "checkpoint.pt").is_file():
        # told "not an SAE directory ... Train one with `saeatlas train`" while one trained
        raise SAEFileError(
            f"'{path}' holds the checkpoint of a training that has not finished: it is still "
            "running, or was stopped (continue it with `saeatlas train --resume`). Read the "
            "SAE once its training is done."
        )
    if not (path / CFG).is_file() or not (path / WEIGHTS).is_file():
        # a joint SAE's SAELens export (a folder per layer) was told to be imported
        hint = sae_folder_hint(path) or (
            " Train one with `saeatlas train`, or import a SAELens directory with `saeatlas "
            "import-saelens`."
        )
        raise SAEFileError(f"'{path}' is not an SAE directory: it needs {CFG} and {WEIGHTS}.{hint}")
    raw = read_cfg(path / CFG)
    missing = [k for k in ("d_in", "d_sae") if k not in raw]
    if missing:  # SAELens's cfg.json has them too
        raise SAEFileError(
            f"'{path / CFG}' lacks the required keys {missing}; it is not an SAE config."
        )
    if is_saelens_cfg(raw):
        return read_saelens(path)
    check_row_transforms(path, raw)
    try:
        cfg = SAEConfig.from_json(raw)
    except (TypeError, KeyError, ValueError, AtlasError) as e:
        raise SAEFileError(f"'{path / CFG}' is not a valid SAE config: {e}") from None
    tensors = read_tensors(path / WEIGHTS)
    return cfg, checked_weights(f"'{path / WEIGHTS}'", tensors, weight_shapes(cfg), dtype=cfg.dtype)
