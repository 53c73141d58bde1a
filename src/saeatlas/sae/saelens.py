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

Export writes SAELens's ``metadata`` (``hook_name``, ``model_name``,
``context_size``, ``prepend_bos``, ``dataset_path``) from what the store's
provenance knows, and leaves out what it does not. A joint SAE over several
layers is one SAELens SAE per layer only when that is exact: every latent reads
and writes the units of one layer, and latents fire independently of each
other (``relu``, ``jumprelu``; TopK picks its k latents across all layers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from .. import __version__
from ..store import LayerSpec
from ..store.atomic import atomic_write_bytes, check_output_dir, replacing_dir
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
    sae = SparseAutoencoder(ours)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(b_dec)
        if ours.architecture == "jumprelu":
            sae.log_threshold.copy_(tensors["threshold"].float().clamp_min(_MIN_THRESHOLD).log())
    return sae.eval()


def saelens_metadata(provenance: dict[str, Any], hook_name: str | None) -> dict[str, Any]:
    """SAELens's ``metadata`` fields that a store's provenance determines."""
    meta: dict[str, Any] = {}
    if hook_name is not None:
        meta["hook_name"] = hook_name.removesuffix(":input")
    model = provenance.get("model_name", provenance.get("model"))
    if model is not None:
        meta["model_name"] = str(model)
    if provenance.get("max_length") is not None:
        meta["context_size"] = int(provenance["max_length"])
    if provenance.get("prepend_bos") is not None:
        meta["prepend_bos"] = bool(provenance["prepend_bos"])
    inputs = provenance.get("inputs")
    if isinstance(inputs, str) and ("/" in inputs or Path(inputs).suffix):  # a file, not a type
        meta["dataset_path"] = inputs
    return meta


def _provenance(sae: SparseAutoencoder, store: Any) -> dict[str, Any]:
    """The provenance of ``store`` (a store or its path), else of the store the SAE was
    trained on when it is still there, else nothing."""
    from ..store import ActivationStore

    if store is None:
        recorded = sae.cfg.metadata.get("store")
        if recorded is None or not (Path(recorded) / "manifest.json").is_file():
            return {}
        store = recorded
    if not isinstance(store, ActivationStore):
        store = ActivationStore.open(store, verify=False)
    return dict(store.manifest.provenance) if store.manifest is not None else {}


def export_saelens(
    sae: SparseAutoencoder, path: str | Path, *, store: Any = None
) -> dict[str, Path]:
    """Write ``sae`` as SAELens directories (``SAE.load_from_disk`` reads them).

    An SAE of one layer goes to ``path``; a joint SAE over several layers goes to
    ``path/<layer>``, one SAELens SAE per layer, when that is exact (see the module
    docstring), and is otherwise refused with the reason. ``store`` (a store or its
    path; by default the one the SAE was trained on) gives the ``metadata``.

    Returns ``{hook_name: directory}`` (the key is ``""`` when the SAE has no layer map).
    """
    path = Path(path)
    provenance = _provenance(sae, store)
    layers = sae.cfg.layers
    parts = split_by_layer(sae) if len(layers) > 1 else None  # refused before any write
    ours = {CFG, WEIGHTS, *(l.name for l in layers)}
    # the export replaces an earlier one whole (written beside it, renamed in), never a
    # directory holding anything else
    check_output_dir(
        path, "a SAELens export", "a SAELens export's", CFG, lambda p: p.name in ours, True
    )
    with replacing_dir(path) as new:
        if parts is None:
            name = layers[0].name if layers else None
            _write_saelens(sae, new, saelens_metadata(provenance, name))
            return {name or "": path}
        for layer, part in zip(layers, parts):
            _write_saelens(part, new / layer.name, saelens_metadata(provenance, layer.name))
    return {layer.name: path / layer.name for layer in layers}


def split_by_layer(sae: SparseAutoencoder) -> list[SparseAutoencoder]:
    """One SAE per layer of a joint SAE, each exactly equal to the joint SAE on its
    layer's units; raises :class:`SAEFileError` saying why when no such split exists."""
    c = sae.cfg
    if c.architecture not in ("relu", "jumprelu"):
        raise SAEFileError(
            f"A joint {c.architecture} SAE over {len(c.layers)} layers cannot be split into "
            "exact per-layer SAEs: it picks its active latents across all layers at once, so "
            "a layer's latents depend on the other layers' units. Train one SAE per layer "
            "(`layers` with one layer each) to export for SAELens."
        )
    # With every latent inside one layer, the other layers' units and b_dec never reach
    # it, so the layer's slice of W_enc, b_enc, W_dec and b_dec gives the same latents.
    w_enc, w_dec = sae.W_enc.detach(), sae.W_dec.detach()
    owner = []
    for i in range(c.d_sae):
        touched = [
            j
            for j, l in enumerate(c.layers)
            if bool(w_enc[l.start : l.stop, i].any()) or bool(w_dec[i, l.start : l.stop].any())
        ]
        if len(touched) > 1:
            names = ", ".join(f"'{c.layers[j].name}'" for j in touched)
            raise SAEFileError(
                f"Latent {i} of the joint SAE reads or writes units of several layers ({names}), "
                "so no per-layer SAELens SAE equals it. Only joint SAEs whose every latent "
                "stays within one layer can be exported per layer; export the joint SAE with "
                "saeatlas, or train one SAE per layer."
            )
        owner.append(touched[0] if touched else -1)
    owner_t = torch.tensor(owner)
    parts = []
    for j, l in enumerate(c.layers):
        mine = torch.nonzero(owner_t == j).flatten()
        if mine.numel() == 0:
            raise SAEFileError(
                f"No latent of the joint SAE belongs to layer '{l.name}'; a SAELens SAE needs "
                "at least one latent."
            )
        cfg = SAEConfig(
            architecture=c.architecture,
            d_in=l.n_units,
            d_sae=int(mine.numel()),
            k=min(c.k, int(mine.numel())),
            apply_b_dec_to_input=c.apply_b_dec_to_input,
            layers=(LayerSpec(l.name, 0, l.n_units, l.shape, l.layout),),
            dtype=c.dtype,
            metadata={**c.metadata, "joint_sae_latents": mine.tolist()},
        )
        part = SparseAutoencoder(cfg)
        with torch.no_grad():
            part.W_enc.copy_(sae.W_enc[l.start : l.stop][:, mine])
            part.b_enc.copy_(sae.b_enc[mine])
            part.W_dec.copy_(sae.W_dec[mine][:, l.start : l.stop])
            part.b_dec.copy_(sae.b_dec[l.start : l.stop])
            if c.architecture == "jumprelu":
                part.log_threshold.copy_(sae.log_threshold[mine])
        parts.append(part.eval())
    return parts


def _reshape(c: SAEConfig) -> str:
    """SAELens's ``reshape_activations``: ``hook_z`` for an SAE of one TransformerLens
    ``hook_z`` recorded per head (SAELens then flattens [..., head, d_head] itself)."""
    if len(c.layers) == 1 and c.layers[0].layout == "head":
        if c.layers[0].name.removesuffix(":input").endswith("hook_z"):
            return "hook_z"
    return "none"


def _write_saelens(sae: SparseAutoencoder, path: Path, metadata: dict[str, Any]) -> Path:
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
        "reshape_activations": _reshape(c),
        "metadata": {
            **metadata,
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
