"""Other tools' SAE directories as ``(SAEConfig, weights)``: SAELens and EleutherAI
sparsify. ``weights`` are the tensors of ``sae_weights.safetensors`` (``W_enc``
[d_in, d_sae], ``b_enc``, ``W_dec`` [d_sae, d_in], ``b_dec``, and an
architecture's own, such as ``threshold``), which
:meth:`~saeatlas.sae.model.SparseAutoencoder.from_weights` turns into an SAE.

SAELens (read from its inference classes, ``sae_lens/saes/*.py``, version 6.54;
see ``tests/fixtures/saelens/README.md``) uses ``cfg.json`` +
``sae_weights.safetensors`` with the same weight names as saeatlas:

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
layer and are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .. import __version__
from ..store import LayerSpec
from .architectures import REGISTRY, get_architecture
from .config import SAEConfig
from .files import CFG, WEIGHTS, SAEFileError

Weights = dict[str, torch.Tensor]

# -- SAELens ---------------------------------------------------------------------------------

_FROM_SAELENS = {a.saelens_name: a.name for a in REGISTRY.values() if a.saelens_exact}
#: SAELens normalisations that leave inference unchanged.
_INERT_NORMALIZATIONS = ("none", "expected_average_only_in", "covariance_whitening", None)


def is_saelens_cfg(cfg: dict[str, Any]) -> bool:
    """True for a ``cfg.json`` written by SAELens rather than by saeatlas."""
    return "l0_coefficient" not in cfg and "jumprelu_bandwidth" not in cfg


def read_saelens(path: str | Path) -> tuple[SAEConfig, Weights]:
    """A SAELens SAE directory as a config and float32 weights."""
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
        # hook_z flattens [..., head, d_head] head-major, as saeatlas's per-head rows are
        ("reshape_activations", ("none", None, "hook_z")),
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
    weights = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}
    for name in get_architecture(ours.architecture).file_weights:
        if name not in tensors:
            raise SAEFileError(f"'{path / WEIGHTS}' has no `{name}` for a SAELens {arch} SAE.")
        weights[name] = tensors[name].float()
    return ours, weights


def _reshape(c: SAEConfig) -> str:
    """SAELens's ``reshape_activations``: ``hook_z`` for an SAE of one TransformerLens
    ``hook_z`` recorded per head (SAELens then flattens [..., head, d_head] itself)."""
    if len(c.layers) == 1 and c.layers[0].layout == "head":
        if c.layers[0].name.removesuffix(":input").endswith("hook_z"):
            return "hook_z"
    return "none"


def saelens_cfg(c: SAEConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    """SAELens's ``cfg.json`` for an SAE of config ``c``."""
    arch = get_architecture(c.architecture)
    cfg: dict[str, Any] = {
        "architecture": arch.saelens_name,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.subtracts_b_dec,
        "normalize_activations": "none",
        "reshape_activations": _reshape(c),
        "metadata": {
            **metadata,
            "exported_by": f"saeatlas {__version__}",
            "saeatlas_architecture": c.architecture,
        },
    }
    return cfg | arch.saelens_cfg(c)


# -- sparsify --------------------------------------------------------------------------------

SPARSIFY_WEIGHTS = "sae.safetensors"


def is_sparsify_dir(path: str | Path) -> bool:
    """True for one hookpoint folder of a sparsify checkpoint."""
    path = Path(path)
    return (path / CFG).is_file() and (path / SPARSIFY_WEIGHTS).is_file()


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
            f"'{run}' holds no sparsify SAE: a hookpoint folder has {CFG} and "
            f"{SPARSIFY_WEIGHTS}, and a run folder holds such folders."
        )
    return found


def read_sparsify(path: str | Path) -> tuple[SAEConfig, Weights]:
    """One sparsify hookpoint folder as a ``topk`` config and float32 weights.

    The folder's name becomes the SAE's layer name (sparsify names folders after
    the hookpoint: a ``named_modules()`` path of the model it was trained on).
    """
    path = Path(path)
    try:
        cfg: dict[str, Any] = json.loads((path / CFG).read_text())
        tensors = load_file(str(path / SPARSIFY_WEIGHTS))
    except (OSError, json.JSONDecodeError) as e:
        raise SAEFileError(f"'{path}' is not a readable sparsify SAE folder: {e}.") from e
    except Exception as e:  # safetensors raises its own error types
        raise SAEFileError(f"'{path / SPARSIFY_WEIGHTS}' is unreadable: {e}.") from e
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
        raise SAEFileError(
            f"'{path / SPARSIFY_WEIGHTS}' lacks {missing}; is it a sparsify checkpoint?"
        )
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
                f"'{path / SPARSIFY_WEIGHTS}': `{name}` is {tuple(tensors[name].shape)}, but "
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
    weights = {
        "W_enc": w_enc.T,
        "b_enc": tensors["encoder.bias"].float(),
        "W_dec": tensors["W_dec"].float(),
        "b_dec": tensors["b_dec"].float(),
    }
    return ours, weights
