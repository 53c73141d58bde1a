"""``AtlasConfig``: how the atlas is computed. Each field's docstring is its ``--help``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from .._validation import (
    check_device,
    check_types,
    choice,
    in_range,
    known_keys,
    non_negative,
    positive,
)
from ..errors import ConfigError
from .constants import MIN_ROWS
from .describe.feature_map import MAP_METHODS
from .graph.finders import FINDERS
from .graph.pairs import AFFINITIES
from .inference.nulls import NULL_DICTIONARIES, NULL_MODELS

# The allowed values of the settings that name a method come from each method's registry.
METHODS = tuple(FINDERS)
NULLS = tuple(NULL_MODELS)
#: Upper bounds of `n_null` and `n_bootstrap`.
MAX_NULL_DRAWS = 10_000
MAX_BOOTSTRAP = 100
#: The largest `seed` (numpy's legacy RandomState, which the Leiden finder takes, stops there).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class AtlasConfig:
    """Settings of ``map_structure`` / ``saeatlas analyze``."""

    #: The allowed values of each setting that names methods, from their registries
    #: (``--help`` lists them).
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "affinity": tuple(AFFINITIES),
        "method": METHODS,
        "map_method": tuple(MAP_METHODS),
        "null_dictionary": NULL_DICTIONARIES,
        "nulls": NULLS,
    }

    min_activation: float = 0.1
    """A feature counts as firing on a row when its activation is at least this
    fraction of its 99th-percentile activation (drops TopK's filler activations)."""
    max_density: float = 0.3
    """Features firing on more than this fraction of rows are dense (a global mode
    rather than a module; Sun et al. 2025) and stay out of the modules."""
    global_mode_cosine: float = 0.5
    """Features whose decoder direction has at least this |cosine| with the units'
    global mode (a top correlation eigenvector shared by all units), or whose
    activation has at least this |correlation| with the mode's score, encode that
    mode and stay out of the modules (1 turns this off)."""
    affinity: str = "phi"
    """Co-occurrence affinity between features."""
    window: int = 0
    """Count co-occurrence per row (0) or per window of this many consecutive rows
    of one sample (tokens of one text)."""
    edge_alpha: float = 0.05
    """False-discovery rate of the co-occurrence edges (Benjamini-Hochberg)."""
    method: str = "leiden"
    """Community finder: leiden (modularity, over `resolutions`), spectral (eigengap)."""
    resolutions: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    """Leiden resolutions: the scales at which the ensemble's modules are compared; the
    one whose reproducible modules hold the most units is reported (ties: the coarsest),
    the next finer one as sub-modules."""
    min_module_features: int = 3
    """Smallest feature community reported as a module (at most the SAE's latents)."""
    min_link_fraction: float = 0.2
    """A feature stays in its community when it has edges to at least this fraction
    of the community's other features (its core); others get no module."""
    min_enrichment: float = 1.5
    """A module is over-represented in a unit when its share of the unit's attributed
    energy over its share of all energy is at least this; the unit joins the
    over-represented module that writes most of its energy."""
    nulls: tuple[str, ...] = NULLS
    """Null models for significance (any of them, run in this order)."""
    null_dictionary: str = "seed"
    """Whose dictionary the dictionary null synthesises rows from: seed (an SAE trained
    like this one with the next seed: the first --seed-sae, else `<sae>-seed1`, trained
    when missing) or self (the SAE's own; no training, but a weaker null)."""
    n_null: int = 10
    """Draws per null model (at most 10,000)."""
    null_rows: int = 50_000
    """Rows used to compare real and null modularity (the same number for both)."""
    alpha: float = 0.05
    """Significance level of partitions and modules (modules: after Benjamini-Hochberg)."""
    label_column: str = "label"
    """Row label (a column of the store's rows.parquet) whose classes modules are
    profiled against, when the store has it."""
    n_examples: int = 10
    """Top-activating rows kept per feature and per module (0: none)."""
    map_method: str = "pca"
    """2-D map of the features (umap needs the `umap` extra; falls back to pca)."""
    n_bootstrap: int = 1
    """Bootstrap resamples of the rows per SAE in the ensemble (each SAE also counts once
    on all rows): modules count only when they reproduce across SAEs and resamples (at
    most 100)."""
    control: bool = True
    """Also run the atlas with random-direction SAEs of the same shape (the random-SAE
    control, as many as the ensemble has SAEs): a module a random dictionary finds too
    is visible without the SAE, and the verdict says so."""
    max_rows: int | None = None
    """Rows of the store to encode (default: all; at least 16)."""
    batch_size: int = 4096
    """Rows encoded at once."""
    top_units: int = 5
    """Top units listed per feature."""
    device: str = "cpu"
    """Device for encoding and for counting co-occurrence (cpu, cuda)."""
    count_in_parts_from: int = 65536
    """Under torchrun: dictionaries with at least this many latents (d_sae) have every
    co-occurrence graph of the analysis (ensemble members, null draws) counted in parts
    by all ranks together, one graph at a time, so that no rank holds more than its
    block of any graph's pair counts; smaller ones have whole graphs spread over the
    ranks, which is faster. No effect in one process."""
    seed: int = 0
    """Seed of the finders and the null models."""

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("affinity", "method", "map_method", "null_dictionary"):
            choice(name, getattr(self, name), self.CHOICES[name])
        if isinstance(self.nulls, str):
            raise ConfigError("`nulls` must be a list of names, not one string.")
        for n in self.nulls:
            if n not in NULLS:
                raise ConfigError(
                    f"Unknown null {n!r} in `nulls`; expected some of: {list(NULLS)}."
                )
        for name in ("edge_alpha", "alpha"):
            in_range(name, getattr(self, name), 0, 1, open_low=True, open_high=True)
        in_range("min_activation", self.min_activation, 0, 1, open_high=True)
        in_range("max_density", self.max_density, 0, 1, open_low=True)
        in_range("global_mode_cosine", self.global_mode_cosine, 0, 1, open_low=True)
        in_range("min_link_fraction", self.min_link_fraction, 0, 1)
        in_range("min_enrichment", self.min_enrichment, 1)
        non_negative(self, "n_bootstrap", "n_examples", "window", "seed")
        in_range("seed", self.seed, 0, MAX_SEED)  # was a traceback from the finder
        positive(
            self,
            "min_module_features",
            "batch_size",
            "top_units",
            "null_rows",
            "count_in_parts_from",
        )
        in_range("max_rows", self.max_rows, MIN_ROWS)  # fewer are refused by analyze anyway
        if self.n_null < 0 or (self.nulls and self.n_null == 1):
            raise ConfigError(f"`n_null` must be 0 or at least 2, got {self.n_null}.")
        # each draw or resample is a graph and a community search of its own (and their
        # seeds and rows are drawn up front): far more is a typo, not a wish
        in_range("n_null", self.n_null, 0, MAX_NULL_DRAWS)
        in_range("n_bootstrap", self.n_bootstrap, 0, MAX_BOOTSTRAP)
        if not self.resolutions or any(r <= 0 for r in self.resolutions):
            raise ConfigError(f"`resolutions` must be positive numbers, got {self.resolutions}.")
        for name in ("resolutions", "nulls"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(
                    f"`{name}` has repeated values: {list(values)}; give each one once."
                )
        check_device("device", self.device, flag="--device")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolutions"] = list(self.resolutions)
        d["nulls"] = list(self.nulls)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AtlasConfig:
        known_keys("atlas settings", d, [f.name for f in fields(cls)])
        d = dict(d)
        for key in ("resolutions", "nulls"):
            if key in d and not isinstance(d[key], str):
                d[key] = tuple(d[key])
        return cls(**d)
