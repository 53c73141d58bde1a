"""Reading EleutherAI sparsify checkpoints (``eai-sparsify``; layout read from
``sparsify/sparse_coder.py``, version 1.3; fixture: ``tests/fixtures/sparsify``).

A sparsify run folder holds one folder per hookpoint::

    RUN/<hookpoint>/cfg.json          expansion_factor, num_latents, k, d_in, transcode, ...
    RUN/<hookpoint>/sae.safetensors   encoder.weight [d_sae, d_in], encoder.bias [d_sae],
                                      W_dec [d_sae, d_in], b_dec [d_in] (+ W_skip [d_in, d_in])

Its sparse coder computes ``pre = relu((x - b_dec) @ encoder.weight.T + encoder.bias)``,
keeps each row's ``k`` largest, and decodes ``acts @ W_dec + b_dec``: saeatlas's
``topk`` architecture with ``W_enc = encoder.weight.T`` and ``b_dec`` subtracted
from the input. Transcoders (which decode into another layer and do not subtract
``b_dec``) and skip connections (``W_skip``) are not sparse autoencoders of one
layer and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..store import LayerSpec
from .config import SAEConfig
from .io import CFG, SAEFileError
from .model import SparseAutoencoder

WEIGHTS = "sae.safetensors"


def is_sparsify_dir(path: str | Path) -> bool:
    """True for one hookpoint folder of a sparsify checkpoint."""
    path = Path(path)
    return (path / CFG).is_file() and (path / WEIGHTS).is_file()


def sparsify_hookpoints(run: str | Path) -> list[Path]:
    """The hookpoint folders of a sparsify run folder (or the folder itself when it is one)."""
    run = Path(run)
    if is_sparsify_dir(run):
        return [run]
    if not run.is_dir():
        raise SAEFileError(f"'{run}' is not a directory.")
    found = sorted(p for p in run.iterdir() if is_sparsify_dir(p))
    if not found:
        raise SAEFileError(
            f"'{run}' holds no sparsify SAE: a hookpoint folder has {CFG} and {WEIGHTS}, and a "
            "run folder holds such folders."
        )
    return found


def load_sparsify(path: str | Path) -> SparseAutoencoder:
    """Read one sparsify hookpoint folder as a :class:`SparseAutoencoder` (eval mode).

    The folder's name becomes the SAE's layer name (sparsify names folders after
    the hookpoint: a ``named_modules()`` path of the model it was trained on).
    """
    path = Path(path)
    try:
        cfg: dict[str, Any] = json.loads((path / CFG).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, json.JSONDecodeError) as e:
        raise SAEFileError(f"'{path}' is not a readable sparsify SAE folder: {e}.") from e
    except Exception as e:  # safetensors raises its own error types
        raise SAEFileError(f"'{path / WEIGHTS}' is unreadable: {e}.") from e
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
    if "W_skip" in tensors or cfg.get("skip_connection"):
        raise SAEFileError(
            f"'{path}' has a skip connection (`W_skip`), which adds a dense term to every "
            "reconstruction; saeatlas reads sparsify SAEs without `skip_connection`."
        )
    missing = [n for n in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if n not in tensors]
    if missing:
        raise SAEFileError(f"'{path / WEIGHTS}' lacks {missing}; is it a sparsify checkpoint?")
    w_enc = tensors["encoder.weight"].float()  # [d_sae, d_in]
    d_sae, d_in = w_enc.shape
    shapes = {
        "encoder.bias": (d_sae,),
        "W_dec": (d_sae, d_in),
        "b_dec": (d_in,),
    }
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise SAEFileError(
                f"'{path / WEIGHTS}': `{name}` is {tuple(tensors[name].shape)}, but "
                f"`encoder.weight` [{d_sae}, {d_in}] implies {shape}."
            )
    if cfg.get("d_in") not in (None, d_in):
        raise SAEFileError(f"'{path / CFG}' says `d_in` {cfg['d_in']}, the weights {d_in}.")
    k = int(cfg.get("k", 0))
    if not 0 < k <= d_sae:
        raise SAEFileError(f"'{path / CFG}' has `k` {cfg.get('k')!r}; expected 1..{d_sae}.")
    ours = SAEConfig(
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=True,
        layers=(LayerSpec(path.name, 0, d_in, (None, None, d_in), "token"),),
        metadata={"imported_from": "sparsify", "sparsify_cfg": cfg, "hookpoint": path.name},
    )
    sae = SparseAutoencoder(ours)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc.T)
        sae.b_enc.copy_(tensors["encoder.bias"].float())
        sae.W_dec.copy_(tensors["W_dec"].float())
        sae.b_dec.copy_(tensors["b_dec"].float())
    return sae.eval()


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
