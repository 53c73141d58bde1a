"""The SAE architectures, one class each: the single place that says what differs
between them at inference and in files (training adds its part in
``saeatlas.train.architectures``).

An architecture names its sparsifier (``activate``), its conventions (TopK
family, subtracting ``b_dec`` from the input, the decoder's scale at init), the
state it adds to ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` (a threshold), and how
that state is written to and read from ``sae_weights.safetensors`` and SAELens.
To add one: subclass :class:`Architecture` here, list it in :data:`REGISTRY`, and
give it a training rule in ``saeatlas/train/architectures.py``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from .activations import batch_topk, jumprelu, topk
from .files import SAEFileError


class Architecture:
    """What one SAE family adds to the shared encoder/decoder maths.

    The methods take the SAE module (``sae``) and its config (``sae.cfg``); they
    hold no state of their own, so one instance serves every SAE.
    """

    name: ClassVar[str]
    """The value of `architecture` in configs and ``cfg.json``."""
    topk_family: ClassVar[bool] = False
    """Keeps ``k`` latents per row (or on average): `k` must not exceed `d_sae`,
    training keeps decoder rows at unit norm and revives dead latents with AuxK."""
    subtracts_b_dec: ClassVar[bool] = False
    """The default of `apply_b_dec_to_input`."""
    decoder_init_scale: ClassVar[float] = 1.0
    """Norm of each decoder row at initialisation."""
    sparsity_setting: ClassVar[str] = "k"
    """The config field that sets its sparsity (what a sparsity sweep varies)."""
    latent_state: ClassVar[tuple[str, ...]] = ()
    """Extra parameters or buffers indexed by latent (``[d_sae]``), which a
    per-layer split of a joint SAE slices with the latents."""
    shared_state: ClassVar[tuple[str, ...]] = ()
    """Extra parameters or buffers that every latent shares, which a per-layer split
    copies whole."""
    latents_compete: ClassVar[bool] = False
    """At inference a latent's activation depends on the others' (each row keeps its k
    largest), so no per-layer split of a joint SAE equals it."""
    file_weights: ClassVar[tuple[str, ...]] = ()
    """Extra tensors in ``sae_weights.safetensors``, each ``[d_sae]``."""
    saelens_name: ClassVar[str]
    """The SAELens architecture it is exported as."""
    saelens_exact: ClassVar[bool] = True
    """A SAELens SAE of ``saelens_name`` reads back as this architecture."""

    def add_state(self, sae: nn.Module, dtype: torch.dtype) -> None:
        """Register the architecture's parameters and buffers on ``sae``."""

    def activate(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        """pre ``[batch, d_sae]`` → sparse activations ``[batch, d_sae]``."""
        raise TypeError(f"{type(self).__name__} must define activate (every architecture does).")

    def save_weights(self, sae: nn.Module) -> dict[str, torch.Tensor]:
        """The detached tensors named in :attr:`file_weights`."""
        return {}

    @torch.no_grad()
    def load_weights(self, sae: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        """Set the architecture's state from the tensors named in :attr:`file_weights`."""

    def saelens_cfg(self, cfg: Any) -> dict[str, Any]:
        """Keys of SAELens's ``cfg.json`` particular to the architecture."""
        return {}


class ReLU(Architecture):
    """ReLU with an L1 penalty weighted by decoder norms (Anthropic 2023, April 2024 update)."""

    name = "relu"
    sparsity_setting = "l1_coefficient"
    decoder_init_scale = 0.1  # April 2024 update: small decoder norms at init
    saelens_name = "standard"

    def activate(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()


class TopK(Architecture):
    """The ``k`` largest pre-activations of each row, ReLU'd (Gao et al. 2024)."""

    name = "topk"
    topk_family = True
    latents_compete = True
    subtracts_b_dec = True
    saelens_name = "topk"

    def activate(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return topk(pre, sae.cfg.k)

    def saelens_cfg(self, cfg: Any) -> dict[str, Any]:
        return {"k": cfg.k, "rescale_acts_by_decoder_norm": False}


class BatchTopK(Architecture):
    """The ``k x batch`` largest of the batch in training; at inference a global
    ``threshold`` estimated in training (Bussmann et al. 2024). SAELens stores it
    as a JumpReLU SAE whose thresholds all equal that one."""

    name = "batchtopk"
    topk_family = True
    subtracts_b_dec = True
    file_weights = ("threshold",)
    shared_state = ("threshold",)
    saelens_name = "jumprelu"
    saelens_exact = False

    def add_state(self, sae: nn.Module, dtype: torch.dtype) -> None:
        # Estimated during training; 0 until then (nothing is cut at inference).
        sae.register_buffer("threshold", torch.zeros((), dtype=dtype))

    def activate(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        if sae.training:
            return batch_topk(pre, sae.cfg.k)
        return pre * (pre > sae.threshold).to(pre.dtype) * (pre > 0).to(pre.dtype)

    def save_weights(self, sae: nn.Module) -> dict[str, torch.Tensor]:
        return {"threshold": sae.threshold.detach().expand(sae.cfg.d_sae)}

    @torch.no_grad()
    def load_weights(self, sae: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        t = weights["threshold"]
        if t.numel() and not bool((t == t.flatten()[0]).all()):  # max() would change the SAE
            raise SAEFileError(
                f"A batchtopk SAE has one threshold, but `threshold` ranges over "
                f"[{float(t.min()):g}, {float(t.max()):g}] across latents: it is a JumpReLU SAE. "
                "Set `architecture` to 'jumprelu' in its cfg.json."
            )
        sae.threshold.copy_(t.max())


#: Smallest JumpReLU threshold saeatlas stores (its thresholds live in log space).
MIN_THRESHOLD = 1e-30


class JumpReLU(Architecture):
    """``pre * H(pre - threshold)`` with a learned per-latent threshold, kept as
    ``log_threshold`` (Rajamanoharan et al. 2024)."""

    name = "jumprelu"
    sparsity_setting = "l0_coefficient"
    latent_state = ("log_threshold",)
    file_weights = ("threshold",)
    saelens_name = "jumprelu"

    def add_state(self, sae: nn.Module, dtype: torch.dtype) -> None:
        init = math.log(sae.cfg.jumprelu_init_threshold)
        # at least float32: a bfloat16 log moved a bfloat16 threshold by up to 0.7% (the
        # log's own rounding), so an SAE loaded from SAELens fired off its thresholds; in
        # float32 the threshold comes back exact once rounded to the SAE's dtype
        log_dtype = torch.promote_types(dtype, torch.float32)
        sae.log_threshold = nn.Parameter(torch.full((sae.cfg.d_sae,), init, dtype=log_dtype))

    def threshold(self, sae: nn.Module) -> torch.Tensor:
        """``[d_sae]`` the thresholds in the SAE's dtype (that of its other weights)."""
        return sae.log_threshold.exp().to(sae.W_enc.dtype)

    def activate(self, sae: nn.Module, pre: torch.Tensor) -> torch.Tensor:
        return jumprelu(pre, self.threshold(sae), sae.cfg.jumprelu_bandwidth)

    def save_weights(self, sae: nn.Module) -> dict[str, torch.Tensor]:
        return {"threshold": self.threshold(sae).detach()}

    @torch.no_grad()
    def load_weights(self, sae: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        t = weights["threshold"].to(sae.log_threshold.dtype)
        sae.log_threshold.copy_(t.clamp_min(MIN_THRESHOLD).log())


#: Every architecture by name; configs accept exactly these.
REGISTRY: dict[str, Architecture] = {a.name: a for a in (ReLU(), TopK(), BatchTopK(), JumpReLU())}
ARCHITECTURES = tuple(REGISTRY)


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name`` (configs have checked it exists)."""
    return REGISTRY[name]
