"""Moving SAEs between saeatlas and SAELens directories.

Both use ``cfg.json`` + ``sae_weights.safetensors`` with the same weight
names. Read from SAELens's inference classes (``sae_lens/saes/*.py``, version
6.54; see ``tests/fixtures/saelens/README.md``):

- every architecture subtracts ``b_dec`` from the input when
  ``apply_b_dec_to_input`` (SAELens's default) — saeatlas honours the flag;
- ``standard`` is saeatlas's ``relu``; ``topk`` keeps the k largest
  pre-activations and ReLUs them, as here; ``jumprelu`` computes
  ``relu(h) * (h > threshold)``, equal to saeatlas's for thresholds > 0 and to
  a ReLU for thresholds <= 0, which saeatlas stores as a tiny positive one;
- ``rescale_acts_by_decoder_norm`` multiplies pre-activations by each decoder
  row's norm and divides before decoding: folded exactly into ``W_enc``,
  ``b_enc`` and ``W_dec`` on import;
- a BatchTopK SAE is saved by SAELens as a ``jumprelu`` one with one global
  threshold; saeatlas exports its BatchTopK SAEs the same way.

Input normalisations that depend on each row (``constant_norm_rescale``,
``layer_norm``) cannot be folded into weights and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from .. import __version__
from ..store.atomic import atomic_write_bytes
from .config import SAEConfig
from .io import CFG, WEIGHTS, SAEFileError
from .model import SparseAutoencoder

_FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
#: SAELens normalisations that leave inference unchanged.
_INERT_NORMALIZATIONS = ("none", "expected_average_only_in", "covariance_whitening", None)
#: Smallest JumpReLU threshold saeatlas stores (its thresholds live in log space).
_MIN_THRESHOLD = 1e-30


def is_saelens_cfg(cfg: dict[str, Any]) -> bool:
    """True for a ``cfg.json`` written by SAELens rather than by saeatlas."""
    return "l0_coefficient" not in cfg and "jumprelu_bandwidth" not in cfg


def load_saelens(path: str | Path) -> SparseAutoencoder:
    """Read a SAELens SAE directory as a :class:`SparseAutoencoder` (eval mode)."""
    path = Path(path)
    try:
        cfg = json.loads((path / CFG).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, json.JSONDecodeError) as e:
        raise SAEFileError(f"'{path}' is not a readable SAELens SAE directory: {e}.") from e
    arch = cfg.get("architecture", "standard")
    if arch not in _FROM_SAELENS:
        raise SAEFileError(
            f"SAELens architecture {arch!r} in '{path}' is not supported; saeatlas reads "
            f"{sorted(_FROM_SAELENS)}."
        )
    for key, allowed in (
        ("normalize_activations", _INERT_NORMALIZATIONS),
        ("reshape_activations", ("none", None)),
    ):
        if cfg.get(key) not in allowed:
            raise SAEFileError(
                f"'{path}' uses `{key}` {cfg.get(key)!r}, which depends on each input row and "
                "cannot be folded into the weights. Apply it to the activations before the "
                "store, and export the SAE with `none`."
            )
    w_enc, b_enc = tensors["W_enc"].float(), tensors["b_enc"].float()
    w_dec, b_dec = tensors["W_dec"].float(), tensors["b_dec"].float()
    if cfg.get("rescale_acts_by_decoder_norm"):
        norms = w_dec.norm(dim=1)
        w_enc, b_enc, w_dec = w_enc * norms, b_enc * norms, w_dec / norms[:, None]
    d_in, d_sae = w_enc.shape
    ours = SAEConfig(
        architecture=_FROM_SAELENS[arch],
        d_in=d_in,
        d_sae=d_sae,
        k=int(cfg.get("k", 1)),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        metadata={"imported_from": "saelens", "saelens_cfg": cfg},
    )
    sae = SparseAutoencoder(ours)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(b_dec)
        if ours.architecture == "jumprelu":
            sae.log_threshold.copy_(tensors["threshold"].float().clamp_min(_MIN_THRESHOLD).log())
    return sae.eval()


def export_saelens(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``sae`` as a SAELens directory (``SAE.load_from_disk`` reads it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    tensors = {
        "W_enc": sae.W_enc.detach(),
        "b_enc": sae.b_enc.detach(),
        "W_dec": sae.W_dec.detach(),
        "b_dec": sae.b_dec.detach(),
    }
    if c.architecture == "jumprelu":
        tensors["threshold"] = sae.jump_threshold.detach()
    elif c.architecture == "batchtopk":
        tensors["threshold"] = sae.threshold.detach().expand(c.d_sae)
    cfg: dict[str, Any] = {
        "architecture": _TO_SAELENS[c.architecture],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.subtracts_b_dec,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "exported_by": f"saeatlas {__version__}",
            "saeatlas_architecture": c.architecture,
        },
    }
    if c.architecture == "topk":
        cfg |= {"k": c.k, "rescale_acts_by_decoder_norm": False}
    tensors = {k: v.to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path / WEIGHTS, save(tensors))
    atomic_write_bytes(path / CFG, (json.dumps(cfg, indent=2) + "\n").encode())
    return path
