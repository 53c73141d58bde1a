"""Saving and loading SAE directories (README, "Sparse autoencoders"; names follow SAELens).

SAE_DIR/cfg.json                  architecture, sizes, layer map, training summary
SAE_DIR/sae_weights.safetensors   W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec,
                                  threshold [d_sae] (JumpReLU, BatchTopK)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..errors import AtlasError
from ..store.atomic import atomic_write_bytes
from .config import SAEConfig
from .model import SparseAutoencoder

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"


class SAEFileError(AtlasError):
    """An SAE directory is missing, incomplete or inconsistent."""


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``sae`` to the directory ``path`` (weights first, ``cfg.json`` last)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W_enc": sae.W_enc.detach(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    arch = sae.cfg.architecture
    if arch == "jumprelu":
        tensors["threshold"] = sae.jump_threshold.detach()
    elif arch == "batchtopk":
        tensors["threshold"] = sae.threshold.detach().expand(sae.cfg.d_sae)
    tensors = {k: v.to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(path / CFG, sae.cfg.dumps().encode())
    return path


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Read an SAE directory written by :func:`save_sae`, by SAELens, or one hookpoint
    folder of a sparsify checkpoint."""
    path = Path(path)
    from .sparsify import is_sparsify_dir, load_sparsify, sparsify_hookpoints

    if is_sparsify_dir(path) and not (path / WEIGHTS).is_file():
        return load_sparsify(path).to(device)
    if not (path / CFG).is_file() and path.is_dir():
        try:
            folders = sparsify_hookpoints(path)
        except SAEFileError:
            folders = []
        if folders:
            names = ", ".join(f"'{f.name}'" for f in folders[:5])
            raise SAEFileError(
                f"'{path}' is a sparsify run with {len(folders)} SAEs ({names}); load one "
                f"hookpoint folder ('{folders[0]}'), or convert them all with `saeatlas "
                "import-sparsify`."
            )
    if not (path / CFG).is_file() or not (path / WEIGHTS).is_file():
        raise SAEFileError(
            f"'{path}' is not an SAE directory: it needs {CFG} and {WEIGHTS}. Train one with "
            "`saeatlas train`, or import a SAELens directory with `saeatlas import-saelens`."
        )
    try:
        raw = json.loads((path / CFG).read_text())
    except json.JSONDecodeError as e:
        raise SAEFileError(f"'{path / CFG}' is not valid JSON: {e}.") from e
    from .saelens import is_saelens_cfg, load_saelens

    if is_saelens_cfg(raw):
        return load_saelens(path).to(device)
    try:
        cfg = SAEConfig.from_json(raw)
    except (TypeError, KeyError) as e:
        raise SAEFileError(f"'{path / CFG}' is unreadable: {e}.") from e
    try:
        tensors = load_file(str(path / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types
        raise SAEFileError(f"'{path / WEIGHTS}' is unreadable: {e}.") from e
    expected = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "b_enc": (cfg.d_sae,),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_dec": (cfg.d_in,),
    }
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = tuple(tensors[name].shape) if name in tensors else "missing"
            raise SAEFileError(f"'{path / WEIGHTS}': `{name}` is {got}, cfg.json implies {shape}.")
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        for name in expected:
            getattr(sae, name).copy_(tensors[name])
        if cfg.architecture in ("jumprelu", "batchtopk"):
            if "threshold" not in tensors:
                raise SAEFileError(
                    f"'{path / WEIGHTS}' has no `threshold` for a {cfg.architecture} SAE."
                )
            if cfg.architecture == "jumprelu":
                sae.log_threshold.copy_(tensors["threshold"].clamp_min(1e-30).log())
            else:
                sae.threshold.copy_(tensors["threshold"].max())
    return sae.to(device).eval()
