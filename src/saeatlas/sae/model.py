"""``SparseAutoencoder``: one module for the ReLU, TopK, BatchTopK and JumpReLU families.

    pre   = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc   # [batch, d_sae]
    f     = sparsify(pre)                                               # [batch, d_sae]
    x_hat = f @ W_dec + b_dec                                           # [batch, d_in]

with ``W_enc`` [d_in, d_sae] and ``W_dec`` [d_sae, d_in] as in SAELens. The
sparsifier is the architecture's (:mod:`saeatlas.sae.architectures`): ReLU (Anthropic 2023/2024), TopK (Gao et al. 2024), BatchTopK
(Bussmann et al. 2024; a global ``threshold`` replaces the batch top-k at
inference) or JumpReLU (Rajamanoharan et al. 2024; per-latent ``threshold``).

A joint multi-layer SAE is the same module over the concatenation of several
layers (``cfg.layers``); its decoder rows split by layer, and
:meth:`decoder_layer_norms` gives each latent's decoder norm per layer
(Lindsey et al. 2024, acausal crosscoders).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .._validation import check_config_argument, check_device
from ..errors import ConfigError, ShapeError
from ..store import ActivationStore, LayerSpec
from .architectures import get_architecture
from .config import SAEConfig
from .formats import checked_weights, saelens_hook_name, weight_shapes
from .io import read_sae, write_sae


class LatentOutput(NamedTuple):
    acts: torch.Tensor
    """``[batch, d_sae]`` sparse latent activations (zeros where inactive)."""
    pre_acts: torch.Tensor
    """``[batch, d_sae]`` pre-activations."""


class ForwardOutput(NamedTuple):
    x_hat: torch.Tensor
    """``[batch, d_in]`` reconstruction."""
    acts: torch.Tensor
    """``[batch, d_sae]`` latent activations."""
    pre_acts: torch.Tensor
    """``[batch, d_sae]`` pre-activations."""


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder; see the module docstring for the maths.

    Args:
        cfg: the architecture and sizes.
        generator: seeds the initialisation.
    """

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        # a path, a dict or a seed ended in an AttributeError or torch's TypeError
        check_config_argument("cfg", cfg, SAEConfig)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(
                f"`generator` must be a torch.Generator (or None), got "
                f"{type(generator).__name__}: pass torch.Generator().manual_seed(seed)."
            )
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        self.arch = get_architecture(cfg.architecture)
        # Decoder rows: random unit directions; encoder: the decoder's transpose
        # (Gao et al. 2024, sec. 2.2 / Conerly et al. 2024).
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if self.arch.decoder_init_scale != 1.0:
            w_dec *= self.arch.decoder_init_scale
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter(w_dec.t().clone().to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.arch.add_state(self, dtype)  # thresholds, after the four (parameter order)

    # -- the maths ---------------------------------------------------------------------------

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[batch, d_in]`` → ``[batch, d_sae]``, in the SAE's dtype (as SAELens casts its
        input: a float32 store's rows meet bfloat16 weights)."""
        _check_rows(
            x, self.cfg.d_in, "reads rows of", "units", "Give it the layers it was trained on."
        )
        x = x.to(self.W_enc.dtype)
        if self.cfg.subtracts_b_dec:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> LatentOutput:
        """x ``[batch, d_in]`` → sparse activations and pre-activations ``[batch, d_sae]``."""
        pre = self.pre_activations(x)
        acts = self.arch.activate(self, pre)
        return LatentOutput(acts, pre)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """acts ``[batch, d_sae]`` → reconstruction ``[batch, d_in]``."""
        _check_rows(
            acts,
            self.cfg.d_sae,
            "decodes rows of",
            "latents",
            "Give it the `acts` its `encode` gives.",
        )
        return acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> ForwardOutput:
        acts, pre = self.encode(x)
        return ForwardOutput(self.decode(acts), acts, pre)

    # -- geometry ----------------------------------------------------------------------------

    def decoder_layer_norms(self) -> torch.Tensor:
        """``[d_sae, n_layers]``: the norm of each latent's decoder row within each layer."""
        layers = self.cfg.layers or ()
        if not layers:
            return self.W_dec.detach().norm(dim=1, keepdim=True)
        return torch.stack(
            [self.W_dec.detach()[:, l.start : l.stop].norm(dim=1) for l in layers], dim=1
        )

    def decoder_layer_share(self) -> torch.Tensor:
        """``[d_sae, n_layers]``: each latent's decoder norm per layer, as a share summing to 1."""
        norms = self.decoder_layer_norms()
        return norms / norms.sum(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Rescale decoder rows to unit norm (TopK-family training)."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the part of each decoder row's gradient parallel to the row, so that a
        step keeps rows near unit norm (Bricken et al. 2023; Gao et al. 2024)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad -= (self.W_dec.grad * w).sum(dim=1, keepdim=True) * w

    # -- files -------------------------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors of ``sae_weights.safetensors`` (detached): ``W_enc``, ``b_enc``,
        ``W_dec``, ``b_dec`` and the architecture's own (``threshold``)."""
        tensors = {
            "W_enc": self.W_enc.detach(),
            "b_enc": self.b_enc.detach(),
            "W_dec": self.W_dec.detach(),
            "b_dec": self.b_dec.detach(),
        }
        return tensors | self.arch.save_weights(self)

    @classmethod
    @torch.no_grad()
    def from_weights(cls, cfg: SAEConfig, weights: dict[str, torch.Tensor]) -> SparseAutoencoder:
        """The SAE of config ``cfg`` holding ``weights`` (as :meth:`weights` gives them),
        in eval mode. They are checked as the files of an SAE are: each weight there, of
        its shape (``copy_`` would broadcast a [1] or a [] silently), a float tensor and
        finite (a missing one ended in a KeyError, a NumPy array in a TypeError, and a
        NaN or an integer weight was taken)."""
        sae = cls(cfg)
        weights = checked_weights("The weights given", weights, weight_shapes(cfg), dtype=cfg.dtype)
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(weights[name])
        sae.arch.load_weights(sae, weights)
        return sae.eval()

    def save(
        self,
        path: str | Path,
        *,
        files: dict[str, bytes] | None = None,
        keep: tuple[str, ...] = (),
        overwrite: bool = True,
    ) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` to the directory ``path``,
        replacing it in one step (see :func:`~saeatlas.sae.io.write_sae` for ``files``,
        ``keep`` and ``overwrite``)."""
        return write_sae(
            self.cfg, self.weights(), path, files=files, keep=keep, overwrite=overwrite
        )

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
        """Read an SAE directory (as written by :meth:`save`, or by SAELens, or one
        hookpoint folder of a sparsify checkpoint), in eval mode."""
        check_device("device", str(device))
        return cls.from_weights(*read_sae(path)).to(device)

    # -- normalisation -----------------------------------------------------------------------

    @torch.no_grad()
    def folded(self, mean: torch.Tensor, scale: torch.Tensor) -> SparseAutoencoder:
        """An SAE on raw inputs ``x`` equal to this SAE on ``(x - mean) / scale``,
        with outputs mapped back (``x_hat * scale + mean``). Exact: the
        pre-activations, and so the active latents, do not change.

        mean, scale: ``[d_in]``.
        """
        out = SparseAutoencoder(self.cfg)
        out.load_state_dict(self.state_dict())
        mean = mean.to(self.W_enc)
        scale = scale.to(self.W_enc)
        out.W_enc.copy_(self.W_enc / scale[:, None])
        out.W_dec.copy_(self.W_dec * scale[None, :])
        out.b_dec.copy_(self.b_dec * scale + mean)
        if not self.cfg.subtracts_b_dec:
            out.b_enc.copy_(self.b_enc - (mean / scale) @ self.W_enc)
        out.train(self.training)
        return out


def _check_rows(x: object, width: int, verb: str, what: str, fix: str) -> None:
    """``x`` is a tensor of rows of ``width`` values: a NumPy array or a list ended in an
    AttributeError, a 0-d tensor in an IndexError, and ``decode`` of another width in
    torch's "mat1 and mat2 shapes cannot be multiplied"."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(
            f"The SAE {verb} {width} {what} as a torch tensor, got {type(x).__name__}; "
            "convert it with torch.as_tensor(x)."
        )
    if x.ndim == 0 or x.shape[-1] != width:
        raise ShapeError(
            f"The SAE {verb} {width} {what}, not a tensor of shape {tuple(x.shape)}. {fix}"
        )


def check_loaded_sae(sae: object) -> None:
    """Refuse anything but a loaded SAE where one goes (a path or an array ended in an
    AttributeError)."""
    if not isinstance(sae, SparseAutoencoder):
        raise ConfigError(
            f"`sae` must be a SparseAutoencoder, got {type(sae).__name__}: load an SAE "
            "directory with SparseAutoencoder.load(path)."
        )


def sae_layers(sae: SparseAutoencoder, store: ActivationStore) -> tuple[LayerSpec, ...]:
    """The store layers an SAE reads, checked against the store's widths."""
    names = [l.name for l in (sae.cfg.layers or ())]
    known = [l.name for l in store.layers]
    if not names:
        # an SAE from SAELens names its hook point in its metadata, not in a layer map:
        # the store's layer of that name (and width) is the one it reads
        hook = saelens_hook_name(sae.cfg)
        if hook in known and store.layer(hook).n_units == sae.cfg.d_in:
            return (store.layer(hook),)
        if hook in known:  # was read as "the store has no layer of that name"
            raise ShapeError(_hook_width_message(sae, hook, store.layer(hook).n_units))
        trained = f" (SAELens's `hook_name` {hook!r})" if hook is not None else ""
        if sae.cfg.d_in != store.n_units:
            raise ShapeError(
                f"The SAE reads {sae.cfg.d_in} units{trained} but names no layers, and the "
                f"store has {store.n_units}. Train the SAE on this store, or give the store "
                "only the layer it was trained on."
            )
        if hook is not None:
            warnings.warn(
                f"The SAE was trained on the hook {hook!r} (SAELens's `hook_name`), but the "
                f"store '{store.path}' has no layer of that name: its layers {known} are read "
                "as that hook's units. Make sure they are the same activations (or name the "
                "store's layer as the hook).",
                stacklevel=2,
            )
        return tuple(store.layers)
    missing = [n for n in names if n not in known]
    if missing:
        raise ShapeError(
            f"The SAE reads layers {names}, but the store '{store.path}' has no {missing} "
            f"(it has {known}). " + (_renamed_npy_hint(sae, store) or _prefix_hint(missing, known))
        )
    layers = [store.layer(name) for name in names]
    for mine, theirs in zip(sae.cfg.layers, layers):
        if mine.n_units != theirs.n_units:
            raise ShapeError(
                f"The SAE's layer '{mine.name}' has {mine.n_units} units, the store "
                f"'{store.path}' has {theirs.n_units} under that name. Was the SAE trained on "
                "another store?"
            )
    width = sum(l.n_units for l in layers)
    if width != sae.cfg.d_in:
        raise ShapeError(
            f"The SAE reads {sae.cfg.d_in} units, but its layers {names} have {width} "
            "units in this store. Was the SAE trained on another store?"
        )
    return tuple(layers)


def _renamed_npy_hint(sae: SparseAutoencoder, store: ActivationStore) -> str:
    """Why an SAE of one layer does not read a ``.npy`` of one layer as wide: the layer of
    a ``.npy`` without a layers.json is named after its file, so the SAE trained on
    'a.npy' was told "Was the SAE trained on another store?" of the same rows in 'b.npy'."""
    path = Path(store.path)
    mine, theirs = sae.cfg.layers, store.layers
    if not (
        path.suffix.lower() == ".npy"
        and len(mine) == len(theirs) == 1
        and theirs[0].name == path.stem
        and mine[0].n_units == theirs[0].n_units
    ):
        return ""
    entry = json.dumps([{"name": mine[0].name, "start": 0, "stop": mine[0].n_units}])
    return (
        f"A .npy without a layers.json holds one layer named after its file: was "
        f"'{path.name}' named '{mine[0].name}.npy' when the SAE was trained? Name it so "
        f"again, or name its layer in '{path.with_name(path.stem + '.layers.json')}' "
        f"({entry})."
    )


def _prefix_hint(missing: list[str], known: list[str]) -> str:
    """Why an SAE's layers are not in a store: named in the model without its head (a
    sparsify SAE's hookpoint 'h.0' of `AutoModel`; the store of GPT2LMHeadModel has
    'transformer.h.0'), or trained on another store."""
    longer = {n: [k for k in known if k.endswith("." + n)] for n in missing}
    if all(len(found) == 1 for found in longer.values()):
        first = missing[0]
        return (
            f"The store's '{longer[first][0]}' ends with '{first}': the SAE names layers of "
            "the model without its head (sparsify trains on transformers' AutoModel). Capture "
            "the store from that model (`--model-class base`)."
        )
    return "Was the SAE trained on another store?"


def _hook_width_message(sae: SparseAutoencoder, hook: str, width: int) -> str:
    """Why an SAE from SAELens does not read the store's layer its `hook_name` names."""
    saelens = sae.cfg.metadata.get("saelens_cfg", {})
    meta = saelens.get("metadata") if isinstance(saelens.get("metadata"), dict) else saelens
    head = meta.get("hook_head_index", saelens.get("hook_head_index"))
    if isinstance(head, int) and not isinstance(head, bool):
        why = (
            f": it was trained on head {head} of it alone (SAELens's `hook_head_index`), which "
            "saeatlas does not cut out of the layer. Capture that head's values as a layer of "
            "their own."
        )
    else:
        why = ". Was it trained on another model?"
    return (
        f"The SAE reads {sae.cfg.d_in} units of SAELens's `hook_name` {hook!r}, but the "
        f"store's layer of that name has {width}{why}"
    )


def sae_fingerprint(sae: SparseAutoencoder, metadata: bool = True) -> str:
    """A hash of ``sae``'s config and of its decoder, strided down to at most about
    65,536 values (enough to tell two trainings apart, cheap for any size). Without
    ``metadata``: of the config less its training record (which tells the ranks of one
    data-parallel training apart: rank 0 alone saved it)."""
    w = sae.W_dec.detach().reshape(-1)
    if w.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the same bits as int16
        w = w.view(torch.int16)
    sample = w[:: max(1, w.numel() // 65536)].cpu().numpy().tobytes()
    cfg = dict(sae.cfg.to_json())
    if not metadata:
        cfg.pop("metadata", None)
    head = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(head + sample).hexdigest()
