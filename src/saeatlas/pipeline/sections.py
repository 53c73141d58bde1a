"""The sections of a run config that are not another command's config: ``sweep``,
``stability``, ``ablation`` and ``report`` (:class:`.config.RunConfig` holds them).
Every field's docstring is its documentation (``docs/pipeline.md``)."""

from __future__ import annotations

from dataclasses import dataclass

from .._validation import check_types, non_negative
from ..errors import ConfigError
from ..losses import LOSSES
from ..structure.causal.ablation import MODES as ABLATION_MODES
from ..structure.causal.random_sets import MAX_RANDOM
from ..sweep.sweep import SWEEPABLE


def show_values(values: tuple[float, ...]) -> str:
    """``values`` as a list written with ``:g`` (8 and 8.0 alike), or in full where that
    rounds (16.0000001 was shown as 16 in "`values` of k must be whole numbers")."""
    return "[" + ", ".join(f"{v:g}" if float(f"{v:g}") == v else repr(v) for v in values) + "]"


@dataclass(frozen=True)
class SweepSection:
    """The sparsity sweep that chooses the final SAE's sparsity (as ``saeatlas sweep``)."""

    enabled: bool = True
    """Run the sweep; false trains the final SAE with `train`'s own sparsity."""
    over: str = "k"
    """Setting swept: k, l1_coefficient or l0_coefficient."""
    values: tuple[float, ...] = (8, 16, 32, 64)
    """Values of `over` to try (at least two)."""
    seeds: int = 2
    """1, or 2 to report each member's decoder stability across two seeds."""
    heldout_fraction: float = 0.1
    """Last rows of the store held out to evaluate the members (never trained on)."""
    extend: int = 3
    """Times the sweep may extend its range past an end (half the smallest, twice the
    largest value) while the knee lies at that end (0: never)."""
    retrain: bool = True
    """Train the final SAE again on every row with the recommended value (true), or use
    the recommended member, trained on all but the held-out rows, as it is (false). A
    member trained with exactly the final settings is reused either way."""

    def __post_init__(self) -> None:
        check_types(self)
        # one spelling of each value (8 and 8.0 alike), for equality and fingerprints
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.over not in SWEEPABLE:
            raise ConfigError(f"Unknown `over` {self.over!r}; expected one of: {list(SWEEPABLE)}.")
        if self.enabled and len(self.values) < 2:
            raise ConfigError(
                f"`values` needs at least two values for a sweep, got {show_values(self.values)}."
            )
        if any(v <= 0 for v in self.values):
            raise ConfigError(f"`values` must be positive, got {show_values(self.values)}.")
        if self.over == "k" and any(float(v) != int(v) for v in self.values):
            raise ConfigError(
                f"`values` of k must be whole numbers, got {show_values(self.values)}."
            )
        if len(set(self.values)) != len(self.values):
            raise ConfigError(f"`values` has repeated values: {show_values(self.values)}.")
        if self.seeds not in (1, 2):
            raise ConfigError(f"`seeds` must be 1 or 2, got {self.seeds}.")
        if not 0 <= self.extend <= 8:
            raise ConfigError(f"`extend` must be in [0, 8], got {self.extend}.")
        if not 0 < self.heldout_fraction < 0.5:
            raise ConfigError(
                f"`heldout_fraction` must be in (0, 0.5), got {self.heldout_fraction}."
            )


@dataclass(frozen=True)
class StabilitySection:
    """Extra SAEs for the atlas's ensemble (modules count only when they reproduce across it)."""

    n_seed_saes: int = 2
    """SAEs trained like the final one with the next seeds (`train.seed` + 1, ...), in
    the same pass over the data; with it they form the atlas's ensemble (each also on
    `analyze.n_bootstrap` resamples of the rows)."""

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 <= self.n_seed_saes <= 8:
            raise ConfigError(f"`n_seed_saes` must be in [0, 8], got {self.n_seed_saes}.")


@dataclass(frozen=True)
class AblationSection:
    """The causal check: ablate every module's units in the model, against random unit sets."""

    enabled: bool = False
    """Ablate the modules (with the cross-entropy loss this needs one label per sample)."""
    loss: str = "cross-entropy"
    """The model's per-sample loss: cross-entropy (a classifier's logits against the
    labels) or next-token (a causal language model's logits against its next tokens)."""
    mode: str = "mean"
    """What ablated units are set to: mean (their mean over the store) or zero."""
    n_random: int | None = None
    """Random unit sets per module, matched by layer (2 to 10,000; by default 100, or
    20 per module when there are more than five, so that one module alone can pass the
    adjustment over the modules)."""
    batch_size: int = 256
    """Samples per forward pass."""
    seed: int = 0
    """Seed of the random unit sets."""

    def __post_init__(self) -> None:
        check_types(self)
        if self.mode not in ABLATION_MODES:
            raise ConfigError(
                f"Unknown `mode` {self.mode!r}; expected one of: {list(ABLATION_MODES)}."
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"Unknown `loss` {self.loss!r}; expected one of: {list(LOSSES)}.")
        if self.n_random is not None and not 2 <= self.n_random <= MAX_RANDOM:
            raise ConfigError(f"`n_random` must be in [2, {MAX_RANDOM}], got {self.n_random}.")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be positive, got {self.batch_size}.")
        # a seed below 0 was called valid by `run --check` and refused by the ablation
        # after the whole run, as `random_state`
        non_negative(self, "seed")


@dataclass(frozen=True)
class ReportSection:
    """The HTML report (as ``saeatlas report``)."""

    enabled: bool = True
    """Write ATLAS/report.html and ATLAS/figures/*.png."""
    max_map_points: int = 20_000
    """At most this many features on the feature map (module members first)."""

    def __post_init__(self) -> None:
        check_types(self)
        if self.max_map_points < 1:
            raise ConfigError(f"`max_map_points` must be positive, got {self.max_map_points}.")
