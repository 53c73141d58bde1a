"""``SAEConfig``: what an SAE is (architecture, sizes, sparsity), as stored in ``cfg.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._validation import check_types, choice, non_negative, positive, strict_json
from ..errors import ConfigError, StoreError
from ..store import LayerSpec
from ..store.atomic import json_text
from ..store.manifest import validate_layers
from .architectures import ARCHITECTURES, get_architecture

#: Keys every saeatlas ``cfg.json`` has; without them it is another tool's file.
REQUIRED_KEYS = ("architecture", "d_in", "d_sae")


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
        check_types(self)
        choice("architecture", self.architecture, ARCHITECTURES)
        positive(self, "d_in", "d_sae", "k", "jumprelu_bandwidth", "jumprelu_init_threshold")
        if get_architecture(self.architecture).topk_family and self.k > self.d_sae:
            raise ConfigError(f"`k` ({self.k}) cannot exceed `d_sae` ({self.d_sae}).")
        non_negative(self, "l1_coefficient", "l0_coefficient")
        choice("dtype", self.dtype, ("float32", "float16", "bfloat16"))
        if self.apply_b_dec_to_input is None:  # the family's own convention
            default = get_architecture(self.architecture).subtracts_b_dec
            object.__setattr__(self, "apply_b_dec_to_input", default)
        if self.layers and self.layers[-1].stop != self.d_in:
            raise ConfigError(
                f"The layer map covers {self.layers[-1].stop} columns but `d_in` is {self.d_in}."
            )
        try:
            validate_layers(self.layers, self.d_in)
        except StoreError as e:
            raise ConfigError(f"Bad `layers` map: {e}") from None

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
        """Read ``cfg.json``: it must name ``architecture``, ``d_in`` and ``d_sae``;
        keys other tools add (SAELens's ``normalize_activations``...) are ignored."""
        if not isinstance(d, dict):
            raise ConfigError(f"cfg.json must hold a JSON object, not {type(d).__name__}.")
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise ConfigError(f"cfg.json lacks the required keys {missing}.")
        if not isinstance(d.get("layers", []), list):
            raise ConfigError("`layers` in cfg.json must be a list of layer entries.")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["layers"] = tuple(LayerSpec.from_json(x) for x in d.get("layers", ()))
        return cls(**kwargs)

    def dumps(self) -> str:
        """``cfg.json``'s text (:func:`~saeatlas.store.atomic.json_text`: NumPy numbers as
        the numbers they hold, NaN as null). A `metadata` that JSON cannot hold, or that
        would hold a key twice (1 and "1"), is refused: ``save`` ended in json's TypeError,
        or wrote a cfg.json that every reader refused."""
        try:
            text = json_text(self.to_json())
            strict_json(text)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"The SAE's config cannot be written as cfg.json: {e}. Its `metadata` may hold "
                "only JSON values (text, numbers, true/false, null, lists, and dicts of text "
                "keys)."
            ) from None
        return text
