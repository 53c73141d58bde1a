"""``PlantedConfig``: the settings of planted activations (:mod:`.planted` has the
generative model they parameterise), and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..._validation import check_types, choice, in_range, known_keys, non_negative
from ...errors import ConfigError

MAGNITUDES = ("exponential", "folded_normal")

#: Preset name -> field overrides of :class:`PlantedConfig`.
PRESETS: dict[str, dict[str, Any]] = {
    # Modules that fire clearly (p_in 0.5, p_out 0.002), little leakage and noise,
    # and magnitudes that are never tiny.
    "easy": dict(
        leakage=0.02,
        p_in=0.5,
        p_out=0.002,
        dense_strength=0.3,
        noise=0.02,
        magnitude="folded_normal",
    ),
    # 64 features per module over ~16 units, 40% of each feature's norm leaked
    # across the network and a stronger dense mode: unit correlations are weak
    # and muddled while feature co-occurrence stays modular.
    "superposition": dict(
        n_modules=8,
        features_per_module=64,
        n_background_features=128,
        support_fraction=0.3,
        leakage=0.4,
        module_rate=0.1,
        p_in=0.15,
        p_out=0.005,
        dense_strength=1.0,
        noise=0.1,
    ),
}
# Six modules, each spanning two consecutive layers of three (modules cross layers
# but not the whole network), with the superposition preset's leakage and noise.
PRESETS["layered"] = {**PRESETS["superposition"], "n_modules": 6, "module_layers": 2}
# The easy preset with every feature writing its units with one sign: a module's units
# rise together, so the modules are blocks of the units' plain correlations (with
# Gaussian signs, as in the other presets, units of one module correlate with either sign
# and plain correlation splits a module by sign).
PRESETS["blocks"] = {**PRESETS["easy"], "positive_directions": True}
PRESETS["null"] = {**PRESETS["easy"], "structured": False}
PRESETS["null_superposition"] = {**PRESETS["superposition"], "structured": False}
#: The cases ``saeatlas validate`` runs by default: every preset.
CASES = tuple(PRESETS)


@dataclass(frozen=True)
class PlantedConfig:
    """How planted activations are generated (see the module docstring for the model)."""

    n_rows: int = 20000
    """Rows (samples) to generate."""
    layer_sizes: tuple[int, ...] = (48, 48, 48)
    """Units per layer; layers are consecutive column blocks."""
    n_modules: int = 4
    """Planted modules (also fixes the feature count when `structured` is false)."""
    features_per_module: int = 32
    """True features owned by each module."""
    n_background_features: int = 32
    """True features owned by no module, supported anywhere."""
    module_layers: int | None = None
    """Consecutive layers each module spans (default: all layers)."""
    free_unit_fraction: float = 0.1
    """Fraction of each layer's units owned by no module."""
    support_fraction: float = 0.5
    """Fraction of its module's units a feature's main part is supported on."""
    leakage: float = 0.1
    """Fraction of each module feature's squared norm placed on units outside its module."""
    module_rate: float = 0.15
    """Probability that a module is active in a row."""
    n_parents: int = 0
    """Group the modules into this many parents (consecutive module ids, as equal as
    possible; 0: no hierarchy). A parent is active in a row with probability
    ``min(1, 2 * module_rate)`` and each of its modules, while it is, with the
    probability that keeps ``module_rate``: the modules of one parent fire together
    far more often than chance, a coarse level above the modules."""
    p_in: float = 0.3
    """Probability that a feature fires when its module is active."""
    p_out: float = 0.005
    """Probability that a feature fires when its module is inactive."""
    magnitude: str = "exponential"
    """Magnitude of a firing feature: exponential (Exp(1)) or folded_normal (|N(1, 0.3)|)."""
    dense_strength: float = 0.5
    """Std of the global dense mode, relative to the typical feature-driven unit std."""
    noise: float = 0.05
    """Std of the Gaussian noise, relative to the typical feature-driven unit std."""
    offset: float = 1.0
    """Std of the per-unit offsets, relative to the typical feature-driven unit std."""
    unit_scale_spread: float = 0.5
    """Std of the log of the per-unit scale factors."""
    layer_scale_spread: float = 1.0
    """Std of the log of the per-layer scale factors."""
    nonnegative: bool = False
    """Apply a ReLU to every layer's output."""
    positive_directions: bool = False
    """Give every feature direction positive entries (``|N(0, 1)|`` before normalising):
    a module's units then rise together when it fires."""
    structured: bool = True
    """Plant modules; false gives the no-structure counterpart with the same marginals."""
    seed: int = 0
    """Seed of every random draw."""

    def __post_init__(self) -> None:
        if isinstance(self.layer_sizes, (str, bytes)) or not hasattr(self.layer_sizes, "__len__"):
            raise ConfigError(
                f"`layer_sizes` must be a list of positive layer widths, got {self.layer_sizes!r}."
            )
        object.__setattr__(self, "layer_sizes", tuple(self.layer_sizes))
        if not self.layer_sizes or any(
            not isinstance(s, (int, np.integer)) or s <= 0 for s in self.layer_sizes
        ):
            raise ConfigError(
                f"`layer_sizes` must be a non-empty list of positive integers, "
                f"got {self.layer_sizes!r}."
            )
        check_types(self)
        for name in ("n_rows", "n_modules", "features_per_module"):
            in_range(name, getattr(self, name), 1)
        non_negative(self, "n_background_features")
        n_layers = len(self.layer_sizes)
        if self.module_layers is not None:
            in_range("module_layers", self.module_layers, 1, n_layers)
        for name in ("free_unit_fraction", "leakage"):
            in_range(name, getattr(self, name), 0, 1, open_high=True)
        in_range("support_fraction", self.support_fraction, 0, 1, open_low=True)
        for name in ("module_rate", "p_in", "p_out"):
            in_range(name, getattr(self, name), 0, 1)
        in_range("n_parents", self.n_parents, 0, self.n_modules)
        non_negative(
            self, "dense_strength", "noise", "offset", "unit_scale_spread", "layer_scale_spread"
        )
        choice("magnitude", self.magnitude, MAGNITUDES)
        spans = module_spans(self)
        for layer, size in enumerate(self.layer_sizes):
            n_here = sum(layer in span for span in spans)
            owned = size - round(self.free_unit_fraction * size)
            if n_here and owned < n_here:
                raise ConfigError(
                    f"Layer {layer} has {owned} units for modules but {n_here} modules span it; "
                    f"lower `n_modules` or `free_unit_fraction`, or raise `layer_sizes`."
                )

    @property
    def n_units(self) -> int:
        return sum(self.layer_sizes)

    @property
    def n_features(self) -> int:
        return self.n_modules * self.features_per_module + self.n_background_features

    @property
    def density(self) -> float:
        """Marginal firing probability of every feature, ``module_rate*p_in + (1-module_rate)*p_out``."""
        return self.module_rate * self.p_in + (1 - self.module_rate) * self.p_out

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PlantedConfig:
        """A named setting (see ``PRESETS``), with some fields overridden.

        ``easy``: clear modules, little leakage and noise. ``blocks``: ``easy`` with
        positive directions (modules are blocks of plain correlation). ``superposition``: 64
        features per module over ~16 units with 40% leakage, so that unit
        correlations are weak but feature co-occurrence is modular. ``null`` and
        ``null_superposition``: their no-structure counterparts.
        """
        if name not in PRESETS:
            raise ConfigError(f"Unknown preset {name!r}; expected one of: {list(PRESETS)}.")
        return cls.from_json({**PRESETS[name], **overrides})

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_sizes"] = list(self.layer_sizes)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlantedConfig:
        known_keys("planted settings", d, [f.name for f in fields(cls)])
        return cls(**d)


def module_spans(config: PlantedConfig) -> list[range]:
    """The layers each module spans, ``[n_modules]`` ranges of consecutive layer indices."""
    n_layers = len(config.layer_sizes)
    m = n_layers if config.module_layers is None else config.module_layers
    n_starts = n_layers - m + 1
    if config.n_modules >= n_starts:  # round-robin: every start is used
        starts = [k % n_starts for k in range(config.n_modules)]
    else:  # fewer modules than starts: spread them out from first to last
        step = (n_starts - 1) / max(config.n_modules - 1, 1)
        starts = [round(k * step) for k in range(config.n_modules)]
    return [range(s, s + m) for s in starts]
