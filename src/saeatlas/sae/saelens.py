"""Moving SAEs between saeatlas and SAELens directories.

Both use ``cfg.json`` + ``sae_weights.safetensors`` with the same weight names;
how each SAELens architecture and option maps to saeatlas's is written in
:mod:`saeatlas.sae.formats`, which reads and describes the files.

Export writes SAELens's ``metadata`` (``hook_name``, ``model_name``,
``context_size``, ``prepend_bos``, ``dataset_path``) from what the store's
provenance knows, and leaves out what it does not. A joint SAE over several
layers is one SAELens SAE per layer only when that is exact: every latent reads
and writes the units of one layer, and latents fire independently of each
other (``relu``, ``jumprelu``, ``batchtopk`` by its threshold; TopK picks its k latents
across all layers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from .._validation import check_path_argument
from ..store import LayerSpec
from ..store.atomic import (
    TMP_PREFIX,
    atomic_write_bytes,
    check_output_dir,
    recover_dir,
    replacing_dir,
)
from ..store.describe import model_name
from ..store.lock import output_lock
from .config import SAEConfig
from .files import CFG, WEIGHTS, SAEFileError
from .formats import is_saelens_cfg, read_cfg, read_saelens, saelens_cfg, saelens_hook_name
from .model import SparseAutoencoder, check_loaded_sae

__all__ = [
    "export_saelens",
    "is_saelens_cfg",
    "load_saelens",
    "saelens_metadata",
    "split_by_layer",
]


def load_saelens(path: str | Path) -> SparseAutoencoder:
    """Read a SAELens SAE directory as a :class:`SparseAutoencoder` (eval mode)."""
    return SparseAutoencoder.from_weights(*read_saelens(path))


def saelens_metadata(provenance: dict[str, Any], hook_name: str | None) -> dict[str, Any]:
    """SAELens's ``metadata`` fields that a store's provenance determines."""
    meta: dict[str, Any] = {}
    if hook_name is not None:
        # kept whole: an SAE of a module's input ('1:input') was written as one of its
        # output ('1'), and read back it read that layer of a store holding both
        meta["hook_name"] = hook_name
    model = model_name(provenance)
    if model is not None:
        meta["model_name"] = model
    if provenance.get("max_length") is not None:
        meta["context_size"] = int(provenance["max_length"])
    if isinstance(provenance.get("prepend_bos"), bool):  # "false" was written as true
        meta["prepend_bos"] = provenance["prepend_bos"]
    inputs = provenance.get("inputs")
    if isinstance(inputs, str) and ("/" in inputs or Path(inputs).suffix):  # a file, not a type
        meta["dataset_path"] = inputs
    return meta


def _provenance(sae: SparseAutoencoder, store: Any) -> dict[str, Any]:
    """The provenance of ``store`` (a store or its path; it must hold the SAE's layers),
    else of the store the SAE was trained on when it is still there and still holds
    them and its rows (``rows_digest`` of the SAE's cfg.json), else nothing."""
    from ..errors import ShapeError
    from ..store import ActivationStore
    from .model import sae_layers

    given = store is not None
    if not given:
        recorded = sae.cfg.metadata.get("store")
        if recorded is None or not (Path(recorded) / "manifest.json").is_file():
            return {}
        store = recorded
    if not isinstance(store, ActivationStore):
        # only its layers and provenance are read: a .npy with NaN rows (which the SAE was
        # trained without, --on-nonfinite skip) stopped with a flag this command has not
        store = ActivationStore.open(store, verify=False, on_nonfinite="skip")
    try:
        sae_layers(sae, store)  # another store's model and context would be wrong metadata
    except ShapeError:
        if given:
            raise
        return {}
    trained_on = sae.cfg.metadata.get("rows_digest")  # train.rows.rows_digest: 16 hex digits
    if not given and isinstance(trained_on, str) and store.digest()[:16] != trained_on:
        # captured again at the recorded path (another model, of the same layer names and
        # widths): its model's name was written as the SAE's
        return {}
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
    check_loaded_sae(sae)
    check_path_argument("path", path)
    path = Path(path)
    provenance = _provenance(sae, store)
    layers = sae.cfg.layers
    parts = split_by_layer(sae) if len(layers) > 1 else None  # refused before any write
    for layer in layers if parts is not None else ():
        if layer.name in ("", ".", "..") or Path(layer.name).name != layer.name:
            raise SAEFileError(  # `out / '..'` or `out / '/abs'` would write outside --out
                f"The joint SAE's layer {layer.name!r} cannot name a folder of the export (each "
                f"layer's SAELens SAE goes to '{path}/<layer>'). Rename it in the `layers` of "
                "the SAE's cfg.json (a plain name: no '/', not '.' or '..')."
            )
    names = {l.name for l in layers} if parts is not None else set()

    def is_ours(p: Path) -> bool:
        # an earlier export's layer folder (a SAELens SAE), not a saeatlas SAE of that name;
        # a folder of the user's files named as a layer (or one with a file added to an
        # export's) was deleted with the folder the export replaced
        if p.name in names:
            if not p.is_dir():
                return False
            inside = {q.name for q in p.iterdir() if not q.name.startswith(TMP_PREFIX)}
            return inside <= {CFG, WEIGHTS} and (not (p / CFG).is_file() or _exported(p))
        return p.name in (CFG, WEIGHTS)

    # a joint SAE's export is a folder of SAELens SAEs: exported again, it was refused as
    # a folder that holds outputs
    with output_lock(path, holds_outputs=parts is not None):
        recover_dir(path)  # what a killed swap left is checked like what is there
        if (path / CFG).is_file() and not is_saelens_cfg(read_cfg(path / CFG)):
            raise SAEFileError(
                f"'{path}' holds a saeatlas SAE, which the export would replace; choose "
                "another --out."
            )
        if (path / CFG).is_file() and not _exported(path):
            # a SAELens SAE it did not write (one downloaded) was replaced without a word
            raise SAEFileError(
                f"'{path}' holds a SAELens SAE that saeatlas did not export (its cfg.json "
                "has no `metadata.exported_by`), which the export would replace; choose "
                "another --out."
            )
        # the export replaces an earlier one whole (written beside it, renamed in), never a
        # directory holding anything else
        check_output_dir(path, "a SAELens export", "a SAELens export's", CFG, is_ours, True)
        with replacing_dir(path) as new:
            if parts is None:
                # an SAE imported from SAELens keeps its hook and its metadata (model,
                # context, versions) where the store's provenance does not say
                name = layers[0].name if layers else saelens_hook_name(sae.cfg)
                imported = _dict(sae.cfg.metadata.get("saelens_cfg")).get("metadata")
                meta = saelens_metadata(provenance, name)
                _write_saelens(sae, new, {**_dict(imported), **meta})
                return {name or "": path}
            for layer, part in zip(layers, parts):
                _write_saelens(part, new / layer.name, saelens_metadata(provenance, layer.name))
    return {layer.name: path / layer.name for layer in layers}


def _exported(path: Path) -> bool:
    """Whether the SAE directory ``path`` is a SAELens SAE that saeatlas exported (an
    earlier export, which the next one replaces), not one of SAELens's own."""
    cfg = read_cfg(path / CFG)
    by = _dict(cfg.get("metadata")).get("exported_by")
    return is_saelens_cfg(cfg) and isinstance(by, str) and by.startswith("saeatlas")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def split_by_layer(sae: SparseAutoencoder) -> list[SparseAutoencoder]:
    """One SAE per layer of a joint SAE, each exactly equal to the joint SAE on its
    layer's units; raises :class:`SAEFileError` saying why when no such split exists."""
    check_loaded_sae(sae)  # a path ended in an AttributeError
    c = sae.cfg
    # a batchtopk SAE fires each latent by one threshold at inference, as a relu SAE does
    # by its sign: it was refused as one that "picks its active latents across all layers"
    if sae.arch.latents_compete:
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
            for name in sae.arch.latent_state:  # per-latent thresholds
                getattr(part, name).copy_(getattr(sae, name)[mine])
            for name in sae.arch.shared_state:  # one threshold for every latent
                getattr(part, name).copy_(getattr(sae, name))
        parts.append(part.eval())
    return parts


def _write_saelens(sae: SparseAutoencoder, path: Path, metadata: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    cfg = saelens_cfg(sae.cfg, metadata)
    tensors = {k: v.to("cpu").contiguous() for k, v in sae.weights().items()}
    atomic_write_bytes(path / WEIGHTS, save(tensors))
    atomic_write_bytes(path / CFG, (json.dumps(cfg, indent=2) + "\n").encode())
    return path
