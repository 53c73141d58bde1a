"""``SparseAutoencoder``: one module for the ReLU, TopK, BatchTopK and JumpReLU families.

    pre   = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc   # [batch, d_sae]
    f     = sparsify(pre)                                               # [batch, d_sae]
    x_hat = f @ W_dec + b_dec                                           # [batch, d_in]

with ``W_enc`` [d_in, d_sae] and ``W_dec`` [d_sae, d_in] as in SAELens. The
sparsifier is ReLU (Anthropic 2023/2024), TopK (Gao et al. 2024), BatchTopK
(Bussmann et al. 2024; a global ``threshold`` replaces the batch top-k at
inference) or JumpReLU (Rajamanoharan et al. 2024; per-latent ``threshold``).

A joint multi-layer SAE is the same module over the concatenation of several
layers (``cfg.layers``); its decoder rows split by layer, and
:meth:`decoder_layer_norms` gives each latent's decoder norm per layer
(Lindsey et al. 2024, acausal crosscoders).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ShapeError
from ..store import ActivationStore, LayerSpec
from .activations import batch_topk, jumprelu, topk
from .config import SAEConfig


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
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        # Decoder rows: random unit directions; encoder: the decoder's transpose
        # (Gao et al. 2024, sec. 2.2 / Conerly et al. 2024).
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if cfg.architecture == "relu":
            w_dec *= 0.1  # April 2024 update: small decoder norms at init
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter(w_dec.t().clone().to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        if cfg.architecture == "jumprelu":
            init = math.log(cfg.jumprelu_init_threshold)
            self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), init, dtype=dtype))
        elif cfg.architecture == "batchtopk":
            # Estimated during training; 0 until then (nothing is cut at inference).
            self.register_buffer("threshold", torch.zeros((), dtype=dtype))

    # -- the maths ---------------------------------------------------------------------------

    @property
    def jump_threshold(self) -> torch.Tensor:
        """Per-latent JumpReLU threshold ``[d_sae]``."""
        return self.log_threshold.exp()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[batch, d_in]`` → ``[batch, d_sae]``."""
        if self.cfg.subtracts_b_dec:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> LatentOutput:
        """x ``[batch, d_in]`` → sparse activations and pre-activations ``[batch, d_sae]``."""
        pre = self.pre_activations(x)
        arch = self.cfg.architecture
        if arch == "relu":
            acts = pre.relu()
        elif arch == "topk":
            acts = topk(pre, self.cfg.k)
        elif arch == "batchtopk":
            if self.training:
                acts = batch_topk(pre, self.cfg.k)
            else:
                acts = pre * (pre > self.threshold).to(pre.dtype) * (pre > 0).to(pre.dtype)
        else:
            acts = jumprelu(pre, self.jump_threshold, self.cfg.jumprelu_bandwidth)
        return LatentOutput(acts, pre)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """acts ``[batch, d_sae]`` → reconstruction ``[batch, d_in]``."""
        return acts @ self.W_dec + self.b_dec

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

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` to the directory ``path``."""
        from .io import save_sae

        return save_sae(self, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
        """Read an SAE directory (as written by :meth:`save`), in eval mode."""
        from .io import load_sae

        return load_sae(path, device)

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


def sae_layers(sae: SparseAutoencoder, store: ActivationStore) -> tuple[LayerSpec, ...]:
    """The store layers an SAE reads, checked against the store's widths."""
    names = [l.name for l in (sae.cfg.layers or ())]
    if not names:
        if sae.cfg.d_in != store.n_units:
            raise ShapeError(
                f"The SAE reads {sae.cfg.d_in} units but names no layers, and the store "
                f"has {store.n_units}. Train the SAE on this store, or give the store "
                "only the layer it was trained on."
            )
        return tuple(store.layers)
    known = [l.name for l in store.layers]
    missing = [n for n in names if n not in known]
    if missing:
        raise ShapeError(
            f"The SAE reads layers {names}, but the store '{store.path}' has no {missing} "
            f"(it has {known}). Was the SAE trained on another store?"
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
