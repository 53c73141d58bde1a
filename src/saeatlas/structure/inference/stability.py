"""Are the atlas's modules stable? Bootstrap of rows, other SAE seeds, and their control.

A module that is a property of the network should come back when the data are
resampled and when the SAE is trained again with another seed.

- **Bootstrap** (same SAE): rows are drawn with replacement (contiguous blocks
  of rows when co-occurrence is counted in token windows, so windows stay whole;
  the moving-block bootstrap of Kuensch 1989) and the atlas's feature
  communities and their unit projection (steps 2-4 of ``map_structure``) are
  computed again. Feature labels of one SAE are comparable across resamples.
- **Seeds** (other SAEs trained on the same store): their dictionaries differ,
  so feature labels are not comparable (Paulo & Belrose 2025), but unit labels
  are: the units are the same. Modules are compared as modules of units, and
  the dictionaries themselves by Hungarian-matched decoder cosine.

A module's stability is its best-match Jaccard (Hennig 2007): the largest
Jaccard similarity between its members and any module of the other run,
averaged over runs; at least 0.75 is stable, below 0.5 dissolved. The control
is the no-structure twin of planted data (``PlantedConfig.preset("null")``):
modules found there should not all be stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..._progress import progress_bar
from ...errors import ConfigError, ShapeError
from ...sae import SparseAutoencoder
from ...store import ActivationStore
from ..atlas import Atlas
from ..config import AtlasConfig
from ..constants import BLOCK_ROWS, DISSOLVED_JACCARD, STABLE_JACCARD
from ..graph.codes import strong_firing
from ..graph.communities import find_modules
from ..graph.firing import drop_columns
from ..inputs import AtlasInputs, prepare
from .matching import match_features
from .partitions import (
    best_match_jaccard,
    consensus_partition,
    feature_stability,
    partition_ari,
    stability_verdict,
)

#: Settings that change the feature communities; the atlas and the bootstrap must share them.
COMMUNITY_FIELDS = (
    "min_activation",
    "max_density",
    "global_mode_cosine",
    "affinity",
    "window",
    "edge_alpha",
    "method",
    "resolutions",
    "min_module_features",
    "min_link_fraction",
    "min_enrichment",
    "max_rows",
    "seed",
)

# ---------------------------------------------------------------- the atlas


@dataclass(frozen=True)
class StabilityResult:
    """How well the atlas's modules survive resampled rows and other SAE seeds."""

    module_jaccard: np.ndarray
    """``[n_modules]`` mean best-match Jaccard of each module's features over bootstraps."""
    module_unit_jaccard: np.ndarray
    """``[n_modules]`` mean best-match Jaccard of each module's units over seed SAEs
    (NaN without seeds, or for a module with no units)."""
    module_stability: np.ndarray
    """``[n_modules]`` :func:`stability_verdict` of the worse of the two Jaccards."""
    bootstrap_ari: list[float]
    """Feature-module ARI of each bootstrap with the atlas."""
    bootstrap_unit_ari: list[float]
    """Unit-module ARI of each bootstrap with the atlas."""
    seed_unit_ari: list[float]
    """Unit-module ARI of each seed SAE's atlas with this one."""
    feature_match_cosine: list[float]
    """Mean Hungarian-matched decoder cosine with each seed SAE (units standardised)."""
    consensus_labels: np.ndarray
    """``[d_sae]`` consensus feature modules of the atlas and its bootstraps (-1 none)."""
    feature_stability: np.ndarray
    """``[d_sae]`` fraction of bootstraps in which a feature stays with the bootstrap
    module holding the majority of its module's members (NaN: in no module)."""
    feature_match_method: list[str] = field(default_factory=list)
    """How each seed's dictionary was matched (:class:`FeatureMatch` ``method``)."""

    def summary(self) -> dict[str, Any]:
        """The stability block of ``atlas.json`` (NaN written as null)."""
        verdicts = list(self.module_stability)
        consensus = self.consensus_labels
        return {
            "n_bootstrap": len(self.bootstrap_ari),
            "n_seeds": len(self.seed_unit_ari),
            "n_stable_modules": verdicts.count("stable"),
            "n_dissolved_modules": verdicts.count("dissolved"),
            "module_stability": verdicts,
            "module_jaccard": _json_floats(self.module_jaccard),
            "module_unit_jaccard": _json_floats(self.module_unit_jaccard),
            "bootstrap_ari": _json_floats(self.bootstrap_ari),
            "bootstrap_unit_ari": _json_floats(self.bootstrap_unit_ari),
            "seed_unit_ari": _json_floats(self.seed_unit_ari),
            "feature_match_cosine": _json_floats(self.feature_match_cosine),
            "feature_match_method": list(self.feature_match_method),
            "n_consensus_modules": int(consensus.max(initial=-1)) + 1,
            "mean_feature_stability": _json_floats([_nanmean(self.feature_stability)])[0],
            "thresholds": {"stable": STABLE_JACCARD, "dissolved": DISSOLVED_JACCARD},
            "method": "best-match Jaccard (Hennig 2007) over row bootstraps (features) and "
            "SAE seeds (units); dictionaries matched by Hungarian decoder cosine "
            "(Paulo & Belrose 2025)",
        }


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _json_floats(x) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=np.float64)]


def module_stability(
    sae: SparseAutoencoder | str | Path,
    store: ActivationStore | str | Path,
    atlas: Atlas,
    config: AtlasConfig | None = None,
    *,
    seeds_saes: Sequence[SparseAutoencoder | str | Path] = (),
    n_bootstrap: int = 3,
    random_state: int = 0,
    progress: bool = False,
) -> StabilityResult:
    """Bootstrap and seed stability of the modules of ``atlas = map_structure(sae, store, config)``.

    ``config`` defaults to the one the atlas was made with (``atlas.summary["config"]``).
    :func:`stability_of` does the work; this loads and encodes the inputs first.
    """
    made = atlas.summary.get("config")
    cfg = config or (AtlasConfig.from_json(made) if made is not None else AtlasConfig())
    if n_bootstrap < 0:
        raise ConfigError(f"`n_bootstrap` must be >= 0, got {n_bootstrap}.")
    inp = prepare(sae, store, cfg, seed_saes=seeds_saes, progress=progress)
    return stability_of(atlas, inp, n_bootstrap=n_bootstrap, random_state=random_state)


def stability_of(
    atlas: Atlas,
    inp: AtlasInputs,
    *,
    n_bootstrap: int | None = None,
    random_state: int | None = None,
) -> StabilityResult:
    """Bootstrap and seed stability of the modules of ``atlas``, made from ``inp``.

    Each of ``n_bootstrap`` (default ``inp.cfg.n_bootstrap``) resamples of the
    encoded rows gets the atlas's feature communities and unit projection again
    (the features kept out of modules, dense or on the global mode, are the
    atlas's; unit scales and firing cuts are those of all rows). Each SAE of
    ``inp.seed_saes`` (trained with another seed on the same store) is encoded on
    the same rows (once, shared with the dictionary null) and gets its own
    modules of units, which are compared with these; nothing else of its atlas
    is computed. ``random_state`` defaults to ``inp.cfg.seed``.
    """
    cfg, sae = inp.cfg, inp.sae
    n_bootstrap = cfg.n_bootstrap if n_bootstrap is None else n_bootstrap
    random_state = cfg.seed if random_state is None else random_state
    _check_atlas(sae, atlas, cfg)
    ref_f = atlas.features["module"].to_numpy().astype(np.int64)
    ref_u = atlas.units["module"].to_numpy().astype(np.int64)
    n_modules = int(ref_f.max(initial=-1)) + 1
    main = inp.main
    excluded = atlas.features["dense"].to_numpy(bool) | atlas.features["global_mode"].to_numpy(bool)
    if not np.array_equal(excluded, main.excluded):  # an atlas made with other exclusions
        fires = drop_columns(strong_firing(main.codes.matrix, cfg.min_activation), excluded)
        main = replace(main, fires=fires)
    codes = main.codes
    rng = np.random.default_rng(random_state)
    boot_f, boot_u = [], []
    seed_u, cosines, methods = [], [], []
    std = np.where(codes.unit_std > 0, codes.unit_std, 1.0)[None, :]
    W = sae.W_dec.detach().double().cpu().numpy() / std
    runs = n_bootstrap + len(inp.seed_saes)
    with progress_bar("stability (resamples, seeds)", runs, inp.progress and runs > 0) as bar:
        for _ in range(n_bootstrap):
            rows, samples = bootstrap_rows(codes.samples, cfg.window, rng)
            found = find_modules(main, cfg, rows, samples)
            boot_f.append(found.feature_module)
            boot_u.append(found.units.module.astype(np.int64))
            bar.advance()
        for other in inp.seed_saes:
            f = inp.firing_of(other)
            seed_u.append(find_modules(f, cfg).units.module.astype(np.int64))
            match = match_features(W, f.sae.W_dec.detach().double().cpu().numpy() / std)
            cosines.append(match.mean_cosine)
            methods.append(match.method)
            bar.advance()

    nan = np.full(n_modules, np.nan)
    jf = best_match_jaccard(ref_f, boot_f, n_modules=n_modules) if boot_f else nan
    ju = best_match_jaccard(ref_u, seed_u, n_modules=n_modules) if seed_u else nan
    worst = np.fmin(jf, ju)  # the worse of the two; NaN only when both are
    return StabilityResult(
        module_jaccard=jf,
        module_unit_jaccard=ju,
        module_stability=stability_verdict(worst).reshape(n_modules),
        bootstrap_ari=[partition_ari(ref_f, f) for f in boot_f],
        bootstrap_unit_ari=[partition_ari(ref_u, u) for u in boot_u],
        seed_unit_ari=[partition_ari(ref_u, u) for u in seed_u],
        feature_match_cosine=cosines,
        consensus_labels=consensus_partition(
            [ref_f, *boot_f], 0.5, min_size=cfg.min_module_features
        ),
        feature_stability=feature_stability(ref_f, boot_f),
        feature_match_method=methods,
    )


def _check_atlas(sae: SparseAutoencoder, atlas: Atlas, cfg: AtlasConfig) -> None:
    if len(atlas.features) != sae.cfg.d_sae or len(atlas.units) != sae.cfg.d_in:
        raise ShapeError(
            f"The atlas has {len(atlas.features)} features and {len(atlas.units)} units, the SAE "
            f"{sae.cfg.d_sae} latents over {sae.cfg.d_in} units: pass the atlas made with this SAE."
        )
    for col in ("module", "dense", "global_mode"):
        if col not in atlas.features.columns:
            raise ShapeError(
                f"The atlas's features table has no `{col}` column; rerun `saeatlas analyze`."
            )
    made = atlas.summary.get("config")
    if made is None:
        return
    made = AtlasConfig.from_json(made)
    differ = [n for n in COMMUNITY_FIELDS if getattr(made, n) != getattr(cfg, n)]
    if differ:
        raise ConfigError(
            f"The atlas was made with other settings of {differ} (e.g. `{differ[0]}` "
            f"{getattr(made, differ[0])!r}, here {getattr(cfg, differ[0])!r}); pass the "
            "config the atlas was made with (`AtlasConfig.from_json(atlas.summary['config'])`)."
        )


def bootstrap_rows(
    samples: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One bootstrap resample of ``n = len(samples)`` rows: ``(rows, samples)``.

    ``window == 0``: rows drawn independently with replacement. Otherwise a
    moving-block bootstrap (Kuensch 1989): blocks of ``BLOCK_ROWS`` consecutive
    rows with random starts, so token windows stay whole; every drawn block gets
    its own sample ids, so a sample's rows stay contiguous as windows require.
    """
    n = len(samples)
    if window == 0:
        rows = rng.integers(0, n, n)
        return rows, samples[rows]
    b = min(BLOCK_ROWS, n)
    starts = rng.integers(0, n - b + 1, -(-n // b))
    rows = (starts[:, None] + np.arange(b)[None, :]).ravel()[:n]
    draw = np.arange(rows.size) // b
    key = draw * (int(samples.max(initial=0)) + 1) + samples[rows].astype(np.int64)
    return rows, np.unique(key, return_inverse=True)[1].reshape(-1)
