"""EleutherAI sparsify's SAE directories as ``(SAEConfig, weights)`` (see
:mod:`saeatlas.sae.formats` for what ``weights`` are).

sparsify (``eai-sparsify``; layout read from ``sparsify/sparse_coder.py``,
version 1.3; fixture: ``tests/fixtures/sparsify``): a run folder holds one folder
per hookpoint::

    RUN/<hookpoint>/cfg.json          expansion_factor, num_latents, k, d_in, transcode, ...
    RUN/<hookpoint>/sae.safetensors   encoder.weight [d_sae, d_in], encoder.bias [d_sae],
                                      W_dec [d_sae, d_in], b_dec [d_in] (+ W_skip [d_in, d_in])

Its sparse coder computes ``pre = relu((x - b_dec) @ encoder.weight.T + encoder.bias)``,
keeps each row's ``k`` largest, and decodes ``acts @ W_dec + b_dec``: saeatlas's
``topk`` architecture with ``W_enc = encoder.weight.T`` and ``b_dec`` subtracted
from the input. Transcoders (which decode into another layer and do not subtract
``b_dec``) and skip connections (``W_skip``) are not sparse autoencoders of one
layer and are refused, as are the signed coders of sparsify's predecessor (EleutherAI's
``sae``, 2024: ``signed`` true drops the ReLU and keeps the k largest ``|pre|``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .._validation import check_path_argument
from ..store import LayerSpec
from .config import SAEConfig
from .files import CFG, SPARSIFY_WEIGHTS, WEIGHTS, SAEFileError, sae_folder_hint
from .formats import Weights, checked_weights, config_from, read_cfg, read_tensors

_FILES = (CFG, SPARSIFY_WEIGHTS)


def is_sparsify_dir(path: str | Path) -> bool:
    """True for one hookpoint folder of a sparsify checkpoint."""
    path = Path(path)
    return (path / CFG).is_file() and (path / SPARSIFY_WEIGHTS).is_file()


def sparsify_hookpoints(run: str | Path) -> list[Path]:
    """The hookpoint folders of a sparsify run folder (or the folder itself when it is one)."""
    check_path_argument("src", run)  # a number or None ended in pathlib's TypeError
    run = Path(run)
    if is_sparsify_dir(run):
        return [run]
    if not run.is_dir():
        raise SAEFileError(f"'{run}' is not a directory." + sae_folder_hint(run))
    found = sorted(p for p in run.iterdir() if is_sparsify_dir(p))
    # a hookpoint folder missing one of its two files (a copy or save that stopped
    # half-way) was passed over, and the run imported without that hookpoint; an SAE of
    # saeatlas's or SAELens's (cfg.json beside sae_weights.safetensors) is none of those
    half = sorted(
        p
        for p in run.iterdir()
        if p.is_dir()
        and not is_sparsify_dir(p)
        and not (p / WEIGHTS).exists()
        and any((p / n).exists() for n in _FILES)
    )
    if half:
        lacks = [n for n in _FILES if not (half[0] / n).is_file()]
        raise SAEFileError(
            f"'{half[0]}' in the sparsify run '{run}' has no {' or '.join(lacks)}: that "
            "hookpoint's SAE is incomplete. Copy it again from the checkpoint, or move the "
            "folder out of the run."
        )
    if not found:
        raise SAEFileError(
            f"'{run}' holds no sparsify SAE: a hookpoint folder has {CFG} and "
            f"{SPARSIFY_WEIGHTS}, and a run folder holds such folders." + sae_folder_hint(run)
        )
    return found


def hookpoint_name(path: Path) -> str:
    """The hookpoint a folder is named after (sparsify names each after its hookpoint),
    also when given as ``.`` from inside it: that was read as a layer named ''."""
    return Path(os.path.abspath(path)).name


def run_message(path: Path) -> str | None:
    """For a sparsify run folder given where one SAE goes: which SAEs it holds and how
    to give one; else None."""
    try:
        folders = sparsify_hookpoints(path) if path.is_dir() else []
    except SAEFileError:
        folders = []
    if not folders or folders == [path]:
        return None
    names = ", ".join(f"'{f.name}'" for f in folders[:5])
    return (
        f"'{path}' is a sparsify run with {len(folders)} SAEs ({names}); load one "
        f"hookpoint folder ('{folders[0]}'), or convert them all with `saeatlas "
        "import-sparsify`."
    )


def read_sparsify(path: str | Path) -> tuple[SAEConfig, Weights]:
    """One sparsify hookpoint folder as a ``topk`` config and float32 weights.

    The folder's name becomes the SAE's layer name (sparsify names folders after
    the hookpoint: a ``named_modules()`` path of the model it was trained on).
    """
    check_path_argument("path", path)  # a number or None ended in pathlib's TypeError
    path = Path(path)
    if not is_sparsify_dir(path):
        # a run folder was told that its cfg.json "cannot be read (No such file or directory)"
        raise SAEFileError(
            run_message(path)
            or f"'{path}' is not a sparsify hookpoint folder: it needs {CFG} and "
            f"{SPARSIFY_WEIGHTS}."
            + sae_folder_hint(path)
        )
    cfg = read_cfg(path / CFG)
    for key in ("transcode", "signed", "skip_connection", "multi_topk", "normalize_decoder"):
        # "false" (text) was refused as a transcoder, signed coder or skip connection
        if key in cfg and not isinstance(cfg[key], bool):
            raise SAEFileError(f"'{path / CFG}': `{key}` must be true or false, got {cfg[key]!r}.")
    if cfg.get("transcode"):
        raise SAEFileError(
            f"'{path}' is a sparsify transcoder (it decodes into another layer than it reads); "
            "saeatlas maps sparse autoencoders of one layer. Train an SAE with `transcode` false."
        )
    if cfg.get("activation", "topk") != "topk":
        raise SAEFileError(
            f"'{path}' uses sparsify's `activation` {cfg['activation']!r}; saeatlas reads "
            "'topk' sparse coders only."
        )
    if cfg.get("signed"):  # EleutherAI's `sae` library, mid-2024 (sparsify's predecessor)
        raise SAEFileError(
            f"'{path}' is a signed sparse coder (`signed` true: no ReLU, and each row keeps the "
            "k latents of largest absolute value); saeatlas reads unsigned TopK coders only. "
            "Train it with `signed` false."
        )
    tensors = read_tensors(path / SPARSIFY_WEIGHTS)
    if "W_skip" in tensors or cfg.get("skip_connection"):
        raise SAEFileError(
            f"'{path}' has a skip connection (`W_skip`), which adds a dense term to every "
            "reconstruction; saeatlas reads sparsify SAEs without `skip_connection`."
        )
    w_enc = tensors.get("encoder.weight")  # [d_sae, d_in]
    if w_enc is None or w_enc.ndim != 2:
        got = "missing" if w_enc is None else tuple(w_enc.shape)
        raise SAEFileError(
            f"'{path / SPARSIFY_WEIGHTS}': `encoder.weight` is {got}, not a [d_sae, d_in] "
            "matrix; is it a sparsify checkpoint?"
        )
    d_sae, d_in = w_enc.shape
    # sparsify sizes its coder from cfg.json: num_latents, or expansion_factor x d_in
    for key, value in (("d_in", d_in), ("num_latents", d_sae)):
        if cfg.get(key) not in (None, 0, value) or isinstance(cfg.get(key), bool):
            raise SAEFileError(
                f"'{path / CFG}' says `{key}` {cfg[key]!r}, but `encoder.weight` "
                f"[{d_sae}, {d_in}] has {value}."
            )
    factor = cfg.get("expansion_factor")
    number = isinstance(factor, (int, float)) and not isinstance(factor, bool)
    if (
        not cfg.get("num_latents")
        and "expansion_factor" in cfg
        and not (number and factor * d_in == d_sae)
    ):
        # sparsify builds num_latents 0 as expansion_factor x d_in latents, and would not
        # load these weights (a factor of 2.5, "4" or true was not checked)
        raise SAEFileError(
            f"'{path / CFG}' says `num_latents` {cfg.get('num_latents', 0)!r} and "
            f"`expansion_factor` {factor!r}"
            + (f" ({factor * d_in:g} latents of {d_in} inputs)" if number else "")
            + f", but `encoder.weight` [{d_sae}, {d_in}] has {d_sae}: the config does not describe "
            f"these weights. Set `num_latents` to {d_sae}."
        )
    tensors = checked_weights(
        f"'{path / SPARSIFY_WEIGHTS}'",
        tensors,
        {
            "encoder.weight": (d_sae, d_in),
            "encoder.bias": (d_sae,),
            "W_dec": (d_sae, d_in),
            "b_dec": (d_in,),
        },
    )
    if "k" not in cfg:
        raise SAEFileError(f"'{path / CFG}' has no `k`; add the `k` the SAE was trained with.")
    ours = config_from(
        path / CFG,
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=cfg["k"],
        apply_b_dec_to_input=True,
        layers=(LayerSpec(hookpoint_name(path), 0, d_in, (None, None, d_in), "token"),),
        metadata={
            "imported_from": "sparsify",
            "sparsify_cfg": cfg,
            "hookpoint": hookpoint_name(path),
        },
    )
    weights = {
        "W_enc": tensors["encoder.weight"].T,
        "b_enc": tensors["encoder.bias"],
        "W_dec": tensors["W_dec"],
        "b_dec": tensors["b_dec"],
    }
    return ours, weights
