"""Other tools' SAE directories as ``(SAEConfig, weights)``: the checks every format
shares, and SAELens (EleutherAI sparsify is read in :mod:`saeatlas.sae.sparsify_format`).
``weights`` are the tensors of ``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae],
``b_enc``, ``W_dec`` [d_sae, d_in], ``b_dec``, and an architecture's own, such as
``threshold``), which
:meth:`~saeatlas.sae.model.SparseAutoencoder.from_weights` turns into an SAE.

SAELens (read from its inference classes, ``sae_lens/saes/*.py``, version 6.54;
see ``tests/fixtures/saelens/README.md``) uses ``cfg.json`` +
``sae_weights.safetensors`` with the same weight names as saeatlas:

- every architecture subtracts ``b_dec`` from the input when
  ``apply_b_dec_to_input`` (SAELens's default) — saeatlas honours the flag;
- the input is cast to the config's ``dtype`` first, and the maths runs in it:
  saeatlas keeps ``float16`` and ``bfloat16`` (else ``float32``);
- ``standard`` is saeatlas's ``relu``; ``topk`` keeps the k largest
  pre-activations and ReLUs them, as here; ``jumprelu`` computes
  ``relu(h) * (h > threshold)``, equal to saeatlas's for thresholds > 0 and to
  a ReLU for thresholds <= 0, which saeatlas stores as a tiny positive one;
- ``rescale_acts_by_decoder_norm`` (``topk`` only; SAELens drops the key from
  other configs) multiplies pre-activations by each decoder row's norm and
  divides before decoding: folded exactly into ``W_enc``, ``b_enc`` and ``W_dec``
  on import;
- a BatchTopK SAE is saved by SAELens as a ``jumprelu`` one with one global
  threshold; saeatlas exports its BatchTopK SAEs the same way.

Input normalisations that depend on each row (``constant_norm_rescale``,
``layer_norm``) cannot be folded into weights and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .. import __version__
from .._validation import check_path_argument, strict_json
from .architectures import REGISTRY, get_architecture
from .config import SAEConfig
from .files import CFG, WEIGHTS, SAEFileError, sae_folder_hint

Weights = dict[str, torch.Tensor]

# -- files shared by every format -------------------------------------------------------------


def read_cfg(file: Path) -> dict[str, Any]:
    """A ``cfg.json`` as a dict, or :class:`SAEFileError` saying why it is not one (a
    key given twice, ``"k": 4, "k": 8``, was read as k 8 by Python and 4 by others)."""
    try:
        raw = strict_json(file.read_text())
    except ValueError as e:  # bad JSON or UTF-8, a 5000-digit number, [[[[..., a key twice
        raise SAEFileError(f"'{file}' is not valid JSON: {e}.") from None
    except OSError as e:
        raise SAEFileError(f"'{file}' cannot be read ({e.strerror or e}).") from None
    if not isinstance(raw, dict):
        raise SAEFileError(f"'{file}' must hold a JSON object, not {type(raw).__name__}.")
    return raw


def read_tensors(file: Path) -> Weights:
    """Every tensor of a safetensors file (which never unpickles anything)."""
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error types
        raise SAEFileError(f"'{file}' is unreadable: {e}.") from None


def weight_shapes(c: SAEConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of ``sae_weights.safetensors`` that an SAE of config ``c`` needs,
    with their shapes."""
    shapes = {
        "W_enc": (c.d_in, c.d_sae),
        "b_enc": (c.d_sae,),
        "W_dec": (c.d_sae, c.d_in),
        "b_dec": (c.d_in,),
    }
    return shapes | {name: (c.d_sae,) for name in get_architecture(c.architecture).file_weights}


def checked_weights(
    where: str,
    tensors: Weights,
    shapes: dict[str, tuple[int, ...]],
    ignored: tuple[str, ...] = (),
    dtype: str = "float32",
) -> Weights:
    """The tensors named in ``shapes`` as float32, after checking that each is there,
    of that shape, of a float dtype and finite (``copy_`` would broadcast a wrong
    shape silently, and cast integers), and that the file holds no others but
    ``ignored`` (SAELens and sparsify load strictly too: a ``threshold`` beside a
    ``topk`` config says the config does not describe the weights). Finite means finite
    as float32 and as ``dtype``, the SAE's: a float64 value beyond float32's range, or a
    float32 one beyond float16's in an SAE of `dtype` float16, would load as Inf.
    ``where`` names the weights in messages (``"'SAE/sae_weights.safetensors'"``): the
    readers of every format check them here, and so do ``from_weights`` and ``save``
    (a NaN weight was saved into an SAE that no reader accepts, and a missing one ended
    ``from_weights`` in a KeyError)."""
    if not isinstance(tensors, dict):
        raise SAEFileError(
            f"{where} must be a dict of tensors by name, got {type(tensors).__name__}."
        )
    extra = sorted(set(tensors) - set(shapes) - set(ignored))
    if extra:
        raise SAEFileError(
            f"{where} holds tensors {extra[:5]} that its config does not use (it needs "
            f"{sorted(shapes)}): the config does not describe these weights. Check its "
            "`architecture`, or drop those tensors."
        )
    out = {}
    for name, shape in shapes.items():
        t = tensors.get(name)
        if t is not None and not isinstance(t, torch.Tensor):  # copy_ ended in a TypeError
            raise SAEFileError(
                f"{where}: `{name}` is a {type(t).__name__}, not a torch tensor; convert it "
                "with torch.as_tensor."
            )
        got = "missing" if t is None else tuple(t.shape)
        if got != shape:
            raise SAEFileError(f"{where}: `{name}` is {got}, expected {shape}.")
        if not t.is_floating_point():
            raise SAEFileError(
                f"{where}: `{name}` has dtype {str(t.dtype).replace('torch.', '')}; "
                "SAE weights must be floats."
            )
        t32 = t.float()  # float64 beyond float32's range turns Inf here, so check after
        if not bool(torch.isfinite(t32).all()):
            bad = int((~torch.isfinite(t32)).sum())
            beyond = bool(torch.isfinite(t).all())
            raise SAEFileError(
                f"{where}: `{name}` has {bad} "
                + ("values beyond float32's range" if beyond else "NaN/Inf values")
                + "; the SAE is broken. Train it again."
            )
        held = t32.to(getattr(torch, dtype))
        if not bool(torch.isfinite(held).all()):  # loaded as Inf without a word
            raise SAEFileError(
                f"{where}: `{name}` has {int((~torch.isfinite(held)).sum())} values beyond "
                f"the range of {dtype}, the `dtype` its cfg.json computes in (they would be "
                "Inf). Set `dtype` to 'float32' in cfg.json, or check the weights."
            )
        out[name] = t32
    return out


def config_from(file: Path, **fields: Any) -> SAEConfig:
    """``SAEConfig(**fields)``, its errors naming ``file``."""
    try:
        return SAEConfig(**fields)
    except (TypeError, ValueError) as e:
        raise SAEFileError(f"'{file}' is not a valid SAE config: {e}") from None


# -- SAELens ---------------------------------------------------------------------------------

_FROM_SAELENS = {a.saelens_name: a.name for a in REGISTRY.values() if a.saelens_exact}
#: SAELens normalisations that leave inference unchanged (SAELens reads the booleans of
#: configs older than 6.0 as "none" and "expected_average_only_in").
_INERT_NORMALIZATIONS = ("none", "expected_average_only_in", "covariance_whitening", None)


def check_row_transforms(path: Path, cfg: dict[str, Any]) -> None:
    """Refuse a ``cfg.json`` whose input normalisation or reshaping changes what the
    weights see (saeatlas folds its own normalisation into the weights, and writes
    `normalize_activations` "none")."""
    for key, allowed in (
        ("normalize_activations", (*_INERT_NORMALIZATIONS, False, True)),
        # hook_z flattens [..., head, d_head] head-major, as saeatlas's per-head rows are
        ("reshape_activations", ("none", None, "hook_z")),
    ):
        if isinstance(cfg.get(key), (dict, list)) or cfg.get(key) not in allowed:
            raise SAEFileError(
                f"'{path}' uses `{key}` {cfg.get(key)!r}; saeatlas reads only "
                f"{[a for a in allowed if isinstance(a, str)]}: other settings transform each "
                "input row and cannot be folded into the weights. Apply it to the activations "
                "before the store, and export the SAE with `none`."
            )


def is_saelens_cfg(cfg: dict[str, Any]) -> bool:
    """True for a ``cfg.json`` written by SAELens rather than by saeatlas: one that
    carries SAELens's version (``metadata.sae_lens_version`` from 6.0, a top-level
    ``sae_lens_training_version`` before), or lacks the sparsity keys saeatlas writes."""
    meta = cfg.get("metadata")
    # a JumpReLU training checkpoint (what SAELens's trainer saves) has `l0_coefficient`
    # and `jumprelu_bandwidth` too, as every training config before 6.0 has the latter:
    # it was read as a saeatlas SAE without its hook, and import-saelens refused it
    marked = any(
        isinstance(where, dict) and key in where
        for where in (cfg, meta)
        for key in ("sae_lens_version", "sae_lens_training_version")
    )
    return marked or ("l0_coefficient" not in cfg and "jumprelu_bandwidth" not in cfg)


def read_saelens(path: str | Path) -> tuple[SAEConfig, Weights]:
    """A SAELens SAE directory as a config and float32 weights, checked against its
    ``cfg.json`` (``d_in``, ``d_sae``, ``k``) as SAELens's own loader would."""
    check_path_argument("path", path)  # a number or None ended in pathlib's TypeError
    path = Path(path)
    for name in (CFG, WEIGHTS):
        if not (path / name).is_file():
            raise SAEFileError(  # a folder of SAEs was told only that it has no cfg.json
                f"'{path}' is not a readable SAELens SAE directory: it has no {name}."
                + sae_folder_hint(path)
            )
    cfg = read_cfg(path / CFG)
    if not is_saelens_cfg(cfg):  # read as SAELens's, it lost its layer map and training facts
        raise SAEFileError(
            f"'{path}' is a saeatlas SAE directory, not a SAELens one; use it as it is "
            "(`SparseAutoencoder.load`, --sae), or write it for SAELens with "
            "`saeatlas export-saelens`."
        )
    arch = cfg.get("architecture", "standard")
    if not isinstance(arch, str) or arch not in _FROM_SAELENS:
        raise SAEFileError(
            f"SAELens architecture {arch!r} in '{path}' is not supported; saeatlas reads "
            f"{sorted(_FROM_SAELENS)}."
        )
    # Configs older than SAELens 6 name the activation apart from the architecture;
    # SAELens 6 reads 'standard' + 'topk' as a ReLU SAE, older versions as a TopK one.
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    if arch != "topk" and activation != "relu":
        raise SAEFileError(
            f"'{path / CFG}' has `architecture` {arch!r} with the activation {activation!r} "
            "(a config older than SAELens 6, which versions read differently). Set "
            "`architecture` to 'topk' and `k` for a TopK SAE, or drop the activation key."
        )
    check_row_transforms(path, cfg)
    _check_text_fields(path / CFG, cfg)
    for key, default in (("apply_b_dec_to_input", True), ("rescale_acts_by_decoder_norm", False)):
        if not isinstance(cfg.get(key, default), bool):
            raise SAEFileError(f"'{path / CFG}': `{key}` must be true or false, got {cfg[key]!r}.")
    k = 1  # unused outside TopK
    if arch == "topk":
        kwargs = cfg.get("activation_fn_kwargs")  # where configs older than 6.0 keep it
        k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
        if k is None:
            raise SAEFileError(
                f"'{path / CFG}' is a SAELens topk SAE without `k`; add the `k` it was "
                "trained with."
            )
    ours = config_from(
        path / CFG,
        architecture=_FROM_SAELENS[arch],
        d_in=cfg.get("d_in"),
        d_sae=cfg.get("d_sae"),
        k=k,
        apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True),
        dtype=_saelens_dtype(cfg.get("dtype")),
        metadata={"imported_from": "saelens", "saelens_cfg": cfg},
    )
    tensors = read_tensors(path / WEIGHTS)
    # SAELens before 6.0 could scale the latents before decoding; all ones is a no-op. It
    # is checked as the other weights are: one of another shape or kind (which SAELens's
    # loader refuses) was taken for ones
    shapes = weight_shapes(ours)
    extra = {"scaling_factor": (ours.d_sae,)} if "scaling_factor" in tensors else {}
    weights = checked_weights(f"'{path / WEIGHTS}'", tensors, shapes | extra, dtype=ours.dtype)
    if extra and not bool((weights.pop("scaling_factor") == 1).all()):
        raise SAEFileError(
            f"'{path / WEIGHTS}' has a `scaling_factor` other than 1 (SAELens's "
            "`finetuning_scaling_factor`, before 6.0), which saeatlas does not apply. Fold it "
            "into W_dec's rows (W_dec * scaling_factor[:, None]) and drop it."
        )
    # a field of SAELens's TopK config alone: its loader drops the key from the others
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norms = weights["W_dec"].norm(dim=1)
        if not bool((norms > 0).all()):
            raise SAEFileError(
                f"'{path / WEIGHTS}' has {int((norms == 0).sum())} decoder rows of norm 0, which "
                "`rescale_acts_by_decoder_norm` divides by; the SAE is broken."
            )
        weights["W_enc"] = weights["W_enc"] * norms
        weights["b_enc"] = weights["b_enc"] * norms
        weights["W_dec"] = weights["W_dec"] / norms[:, None]
    return ours, weights


def _check_text_fields(file: Path, cfg: dict[str, Any]) -> None:
    """Refuse a ``metadata`` that is no JSON object, a ``hook_name`` (SAELens 6 keeps it
    in ``metadata``, older versions at the top) that is no text, and a ``dtype`` that is no
    dtype SAELens reads: each would otherwise be read as absent (no hook, float32), and the SAE matched
    to a store's layers without its hook."""
    meta = cfg.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise SAEFileError(
            f"'{file}': `metadata` must be a JSON object, got {type(meta).__name__} "
            f'{_short(meta)}; write it as {{"hook_name": ...}} or drop it.'
        )
    dtype = cfg.get("dtype")
    # read as float32 without a word (a typo "bfloat" too, which SAELens refuses: it looks
    # the name up in its DTYPE_MAP)
    if dtype is not None and (not isinstance(dtype, str) or dtype not in SAELENS_DTYPES):
        raise SAEFileError(
            f"'{file}': `dtype` must be the name of a dtype SAELens reads ('float32', 'float64', "
            f"'float16' or 'bfloat16', with or without 'torch.'), got {_short(dtype)}."
        )
    for where, key in ((meta or {}, "metadata.hook_name"), (cfg, "hook_name")):
        hook = where.get("hook_name")
        if hook is not None and not isinstance(hook, str):
            raise SAEFileError(
                f"'{file}': `{key}` must be the hook point's name as text "
                f'(e.g. "blocks.0.hook_resid_pre"), got {_short(hook)}.'
            )


#: The dtypes SAELens reads (its ``DTYPE_MAP``).
SAELENS_DTYPES = tuple(
    f"{prefix}{name}"
    for prefix in ("", "torch.")
    for name in ("float32", "float64", "float16", "bfloat16")
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def saelens_hook_name(c: SAEConfig) -> str | None:
    """The hook point an SAE imported from SAELens was trained on: its ``cfg.json``'s
    ``metadata.hook_name`` (the top-level ``hook_name`` before SAELens 6), when it names
    one."""
    cfg = c.metadata.get("saelens_cfg") if isinstance(c.metadata, dict) else None
    if not isinstance(cfg, dict):
        return None
    meta = cfg.get("metadata")
    hook = meta.get("hook_name") if isinstance(meta, dict) else None
    hook = cfg.get("hook_name") if hook is None else hook
    return hook if isinstance(hook, str) and hook else None


def _saelens_dtype(dtype: Any) -> str:
    """The dtype a SAELens SAE computes in (it casts its input to its `dtype`): float16 and
    bfloat16 kept, so that its latents are SAELens's (and an export reads back as it was
    written), anything else float32 (float64 too: saeatlas SAEs are at most float32)."""
    name = dtype.removeprefix("torch.") if isinstance(dtype, str) else None
    return name if name in ("float16", "bfloat16") else "float32"


def _reshape(c: SAEConfig) -> str:
    """SAELens's ``reshape_activations``: ``hook_z`` for an SAE of one TransformerLens
    ``hook_z`` recorded per head (SAELens then flattens [..., head, d_head] itself), or
    for one imported from SAELens with it (its layer map is empty: exported again, it
    was written with "none", which SAELens applies to the unflattened heads)."""
    if len(c.layers) == 1 and c.layers[0].layout == "head":
        if c.layers[0].name.removesuffix(":input").endswith("hook_z"):
            return "hook_z"
    imported = c.metadata.get("saelens_cfg") if isinstance(c.metadata, dict) else None
    if not c.layers and isinstance(imported, dict):
        return "hook_z" if imported.get("reshape_activations") == "hook_z" else "none"
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
