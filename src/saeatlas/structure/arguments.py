"""The Python API's arguments checked for their kind before the work (``analyze``,
``map_structure``): the CLI always passes the right kinds, a Python caller may not."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from .._validation import check_flag_argument
from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..store.npy import check_store_argument
from .config import AtlasConfig


def check_arguments(
    sae: Any,
    store: Any,
    config: Any,
    *,
    seed_saes: Any = (),
    null_source: Any = None,
    sweep: Any = None,
    progress: Any = False,
    **_: Any,
) -> None:
    """Refuse arguments of the wrong kind before the work: an array as the store ended in
    pathlib's "expected str, bytes or os.PathLike object", a dict as the config in an
    AttributeError, the AtlasConfig class itself after the whole analysis, and one path
    as ``seed_saes`` was read as SAEs named by its characters ('/'), and
    ``progress="no"`` by its truth (the bars were shown)."""
    paths = (str, os.PathLike, SparseAutoencoder)
    check_flag_argument("progress", progress)
    check_sae_argument("sae", sae)
    check_sae_argument("null_source", null_source, optional=True)
    check_store_argument(store)
    if not isinstance(config, AtlasConfig):
        got = "the class itself" if config is AtlasConfig else type(config).__name__
        raise ConfigError(
            f"`config` must be an AtlasConfig, got {got}: pass AtlasConfig(...) (or "
            "AtlasConfig.from_json(settings) for a dict)."
        )
    if not isinstance(seed_saes, (list, tuple)) or not all(isinstance(s, paths) for s in seed_saes):
        raise ConfigError(
            f"`seed_saes` must be a list of SAEs (SparseAutoencoder objects or SAE directory "
            f"paths), got {seed_saes!r:.200}: give one SAE as [sae]."
        )
    pairs = sweep[1] if isinstance(sweep, (list, tuple)) and len(sweep) == 2 else None
    if sweep is not None and not (
        pairs is not None
        and isinstance(sweep[0], str)
        and sweep[0]
        and isinstance(pairs, (list, tuple))
        and all(
            isinstance(m, (list, tuple))
            and len(m) == 2
            and _finite_number(m[0])
            and isinstance(m[1], paths)
            for m in pairs
        )
    ):
        raise ConfigError(
            f"`sweep` must be (setting, [(value, SAE), ...]), each value a finite number, got "
            f"{sweep!r:.200}."
        )
    values = [float(m[0]) for m in pairs or ()]
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:  # their ARI (of two seeds) was reported as the change from one value to the next
        raise ConfigError(
            f"`sweep` gives several members the value {twice[0]:g} of `{sweep[0]}`: a sweep has "
            "one member per value; give each value once."
        )


def _finite_number(value: Any) -> bool:
    """A sweep member's value: a finite number, NumPy's too (np.int64(4) was refused), not
    True (read as 1) nor NaN or Inf (the whole analysis ran, then its atlas could not be
    saved: atlas.json holds only finite numbers)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def check_sae_argument(name: str, value: Any, *, optional: bool = False) -> None:
    """``value`` (``name``; None too when ``optional``) is an SAE or an SAE's path."""
    allowed = (str, os.PathLike, SparseAutoencoder, *((type(None),) if optional else ()))
    if not isinstance(value, allowed):
        raise ConfigError(
            f"`{name}` must be an SAE (a SparseAutoencoder, or the path of an SAE "
            f"directory), got {type(value).__name__}."
        )
