"""``SAEConfig``: what an SAE is (architecture, sizes, sparsity), as stored in ``cfg.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..store import LayerSpec

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass(frozen=True)
class SAEConfig:
    """Shape and sparsity of a sparse autoencoder. Names follow SAELens."""

    architecture: str = "topk"
    """``relu`` (L1 weighted by decoder norms), ``topk``, ``batchtopk`` or ``jumprelu``."""
    d_in: int = 1
    """Input width: the store's units (or the chosen layers' units)."""
    d_sae: int = 1
    """Number of latents."""
    k: int = 32
    """Active latents per row (``topk``), or on average per row (``batchtopk``)."""
    l1_coefficient: float = 5.0
    """Weight of the L1 penalty ``sum_i f_i * ||W_dec_i||`` (``relu``)."""
    l0_coefficient: float = 1e-3
    """Weight of the L0 penalty (``jumprelu``)."""
    jumprelu_bandwidth: float = 1e-3
    """Width of the rectangle kernel of the threshold's pseudo-derivative (``jumprelu``)."""
    jumprelu_init_threshold: float = 1e-3
    """Initial threshold of every latent (``jumprelu``)."""
    apply_b_dec_to_input: bool | None = None
    """Subtract ``b_dec`` from the input before encoding; by default true for
    ``topk`` and ``batchtopk`` (Gao et al.), false for ``relu`` and ``jumprelu``."""
    layers: tuple[LayerSpec, ...] = ()
    """Layer map of the input columns (several layers: a joint multi-layer SAE)."""
    dtype: str = "float32"
    """Dtype of the weights."""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    """Free-form facts saved with the SAE (training summary, store, normalisation)."""

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"Unknown `architecture` {self.architecture!r}; expected one of: {list(ARCHITECTURES)}."
            )
        for name in ("d_in", "d_sae", "k"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`{name}` must be positive, got {getattr(self, name)}.")
        if self.architecture in ("topk", "batchtopk") and self.k > self.d_sae:
            raise ConfigError(f"`k` ({self.k}) cannot exceed `d_sae` ({self.d_sae}).")
        for name in ("l1_coefficient", "l0_coefficient"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.jumprelu_bandwidth <= 0 or self.jumprelu_init_threshold <= 0:
            raise ConfigError(
                "`jumprelu_bandwidth` and `jumprelu_init_threshold` must be positive."
            )
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(
                f"Unknown `dtype` {self.dtype!r}; expected float32, float16 or bfloat16."
            )
        if self.apply_b_dec_to_input is None:  # the family's own convention
            object.__setattr__(
                self, "apply_b_dec_to_input", self.architecture in ("topk", "batchtopk")
            )
        if self.layers and self.layers[-1].stop != self.d_in:
            raise ConfigError(
                f"The layer map covers {self.layers[-1].stop} columns but `d_in` is {self.d_in}."
            )

    @property
    def subtracts_b_dec(self) -> bool:
        return bool(self.apply_b_dec_to_input)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [layer.to_json() for layer in self.layers]
        d["normalize_activations"] = "none"  # normalisation is folded into the weights
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["layers"] = tuple(LayerSpec.from_json(x) for x in d.get("layers", ()))
        return cls(**kwargs)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"
