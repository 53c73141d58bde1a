"""``saeatlas validate``: the atlas and its baselines on activations with planted structure.

For every case (a preset of :mod:`.planted`) and seed: generate the data (the
same data for every seed), train the atlas's ensemble of TopK SAEs on it in one
pass, run :func:`~saeatlas.structure.map_structure`, and score the unit modules
against the planted ones by the adjusted Rand index (ARI; free units count as
one group of their own), how many planted modules a reported module matches at
Jaccard >= 0.5, and the agreement with the first seed's run. Baselines partition the units'
correlation matrix directly with Leiden: raw, and cleaned of the global mode
and the noise bulk. On the no-structure cases the score that matters is the
number of modules reported significant (it should be 0). Methods: ``atlas``;
``leiden-raw-corr`` (Leiden on the positive unit correlations);
``leiden-clean-corr`` (the same without the global mode and the noise bulk).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from ..._validation import check_config_argument, in_range, shown
from ..._world import memory_bytes
from ...errors import ConfigError
from ...store import ActivationStore
from ...train import TrainConfig
from ...train.family import train_family
from ...train.run import check_fits
from ..config import MAX_SEED, AtlasConfig
from ..graph.finders import LeidenModules
from ..graph.units import unit_correlation_graph
from ..inference.partitions import best_match_jaccard, partition_ari
from ..mapping import map_structure
from .config import CASES, PRESETS, PlantedConfig
from .planted import make_planted, module_parents, save_planted

#: The most passes over the planted rows a validation SAE trains on (its default: 20).
MAX_PASSES = 1000


@dataclass(frozen=True)
class ValidationSettings:
    """Sizes of one validation run (the defaults take a minute or two per case on 2 cores)."""

    n_rows: int = 20_000
    d_sae: int = 512
    k: int = 16
    tokens: int = 400_000
    batch_size: int = 1024
    n_null: int = 5
    n_saes: int = 3
    """SAEs in the atlas's ensemble, trained in one pass over shared batches."""
    data_seed: int = 0
    """Seed of the planted data; the validation's seeds vary the analysis (SAE training,
    resamples, nulls) on the same data, so two seeds are two analyses of one dataset."""

    def __post_init__(self) -> None:
        if self.n_rows < self.batch_size:  # the SAEs train on whole batches of rows
            raise ConfigError(
                f"--rows ({self.n_rows}) must be at least {self.batch_size}, one training "
                f"batch of the validation's SAEs."
            )
        if self.tokens < self.batch_size:
            raise ConfigError(
                f"--tokens ({self.tokens}) must be at least {self.batch_size}, one training "
                f"batch of the validation's SAEs."
            )
        if self.tokens > MAX_PASSES * self.n_rows:  # 10**16 ran for months without a word
            raise ConfigError(
                f"--tokens ({self.tokens:,}) is more than {MAX_PASSES:,} passes over the "
                f"{self.n_rows:,} rows of --rows: give at most {MAX_PASSES * self.n_rows:,} "
                "(the default trains on 20 passes), or more --rows."
            )
        if self.d_sae < self.k:
            raise ConfigError(
                f"--d-sae ({self.d_sae}) must be at least {self.k}, the validation SAEs' L0."
            )


def _baseline(x: np.ndarray, clean: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # a unit a ReLU keeps at 0
        corr = np.nan_to_num(np.corrcoef(x.T))  # correlates with none (it printed warnings)
    graph = unit_correlation_graph(corr, x.shape[0], clean=clean)
    return LeidenModules(random_state=0).fit(graph).labels_


def _planted_config(
    case: str, settings: ValidationSettings, planted: PlantedConfig | None
) -> PlantedConfig:
    """``planted``, else the preset ``case`` with the settings' rows and data seed."""
    return planted or PlantedConfig.preset(case, seed=settings.data_seed, n_rows=settings.n_rows)


def validate_case(
    case: str,
    seed: int = 0,
    settings: ValidationSettings = ValidationSettings(),
    planted: PlantedConfig | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Score the atlas and the baselines on one planted case and analysis seed: the
    table's rows and the atlas's unit modules. ``planted``: the data's settings (default:
    the preset ``case`` with the settings' rows and data seed), ``case`` then its name."""
    cfg = _planted_config(case, settings, planted)
    data = make_planted(cfg)
    # the top level of the planted structure: the parents of grouped modules, whose
    # modules are then its sub-modules
    truth, children = data.unit_module, None
    if cfg.n_parents and data.n_modules:
        children = truth
        truth = np.where(truth >= 0, module_parents(cfg)[truth.clip(0)], -1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore.open(save_planted(data, Path(tmp) / "planted"))
        t0 = time.perf_counter()
        configs = [
            TrainConfig(
                d_sae=settings.d_sae,
                k=settings.k,
                tokens=settings.tokens,
                batch_size=settings.batch_size,
                seed=settings.n_saes * seed + i,
            )
            for i in range(settings.n_saes)
        ]
        saes = [r.sae for r in train_family(store, configs, progress=False)]
        atlas = map_structure(
            saes[0],
            store,
            AtlasConfig(n_null=settings.n_null, null_rows=settings.n_rows, seed=seed),
            seed_saes=saes[1:],
        )
        seconds = time.perf_counter() - t0
    s = atlas.summary
    modules = atlas.units.module.to_numpy()
    planted = int(truth.max()) + 1
    counted = atlas.modules["counted"].to_numpy(bool) if len(atlas.modules) else np.zeros(0, bool)
    rows.append(
        {
            "case": case,
            "seed": seed,
            "method": "atlas",
            "ari": adjusted_rand_score(truth, modules),
            "n_modules": s["n_modules"],
            "n_significant": s["n_significant_modules"],
            "planted_found": f"{_found(truth, modules)}/{planted}",
            "submodules_found": None
            if children is None
            else f"{_found(children, atlas.units.submodule.to_numpy())}/{data.n_modules}",
            "min_reproducibility": float(atlas.modules["reproducibility"][counted].min())
            if counted.any()
            else float("nan"),
            "verdict": s["verdict"],
            "seconds": seconds,
        }
    )
    for clean, name in ((False, "leiden-raw-corr"), (True, "leiden-clean-corr")):
        t0 = time.perf_counter()
        labels = _baseline(data.X, clean)
        rows.append(
            {
                "case": case,
                "seed": seed,
                "method": name,
                "ari": adjusted_rand_score(truth, labels),
                "n_modules": int(labels.max() + 1),
                "n_significant": None,
                "planted_found": None,
                "submodules_found": None,
                "min_reproducibility": float("nan"),
                "verdict": None,
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows, modules


#: Bytes a case holds per planted value at once: the activations (float32) and the
#: baselines' float64 copy for their correlations, with room for the analysis's own.
BYTES_PER_VALUE = 16


def _check_rows_fit(case: str, n_rows: int, n_units: int) -> None:
    """Refuse ``--rows`` whose planted activations cannot be held in this machine's
    memory (``--rows 10**8`` generated data for minutes before running out of it, and
    ``10**30`` was refused naming ``n_rows``, a setting validate does not have)."""
    have = memory_bytes("cpu")
    if have is None or n_rows * n_units * BYTES_PER_VALUE <= have:
        return
    most = have // (n_units * BYTES_PER_VALUE)
    raise ConfigError(
        f"--rows ({n_rows:,}) of case '{case}' ({n_units} units) needs about "
        f"{n_rows * n_units * BYTES_PER_VALUE / 2**30:,.0f} GiB of memory for the planted "
        f"activations; this machine has {have / 2**30:,.1f} GiB. Give at most {most:,} rows."
    )


def _found(truth: np.ndarray, labels: np.ndarray) -> int:
    """How many modules of ``truth`` a module of ``labels`` matches at Jaccard >= 0.5."""
    n = int(truth.max()) + 1
    return int((best_match_jaccard(truth, labels, n_modules=n) >= 0.5).sum()) if n else 0


def validate(
    cases: tuple[str, ...] = CASES,
    seeds: tuple[int, ...] = (0,),
    settings: ValidationSettings = ValidationSettings(),
    planted: dict[str, PlantedConfig] | None = None,
) -> pd.DataFrame:
    """The table of cases x methods x seeds with their scores; ``ari_first_seed`` is
    the atlas's agreement (unit-module ARI) with its run at the first seed.
    ``planted``: case name -> the data's settings, for cases that are not presets."""
    _check_arguments(cases, seeds, settings, planted)
    for case in cases:  # before any work, naming validate's own flags: train's advice named
        # --batch-size and --expansion-factor, which validate does not have
        given = (planted or {}).get(case)
        _check_rows_fit(
            case, settings.n_rows, sum((given or PlantedConfig.preset(case)).layer_sizes)
        )
        units = sum(_planted_config(case, settings, given).layer_sizes)
        # its SAEs train at once (train_family): all of them must fit
        device = TrainConfig().device
        check_fits(units, settings.d_sae, settings.batch_size, device, "--d-sae", settings.n_saes)
    rows = []
    for case in cases:
        first = None
        for seed in seeds:
            case_rows, modules = validate_case(case, seed, settings, (planted or {}).get(case))
            first = modules if first is None else first
            case_rows[0]["ari_first_seed"] = partition_ari(first, modules)
            rows.extend(case_rows)
    return pd.DataFrame(rows)


def _check_arguments(
    cases: object, seeds: object, settings: object, planted: dict[str, PlantedConfig] | None
) -> None:
    """Refuse, before any work, what :func:`validate` cannot run as asked: a case named as
    text was read letter by letter ("Unknown preset 'n'"), a case or a seed given twice was
    run again and listed twice (a seed again agreed with its first run at ARI 1.0, as if
    two seeds did), no case or seed gave an empty table, a seed of another type or out of
    range ended in a TypeError or was named as `seed` of another value (-3 for -1), and
    settings of another type in an AttributeError."""
    check_config_argument("settings", settings, ValidationSettings)
    # (`saeatlas validate --seeds N` runs seeds 0 to N - 1, never one twice)
    for name, values in (("--cases", cases), ("`seeds`", seeds)):
        if not isinstance(values, (tuple, list)) or not values:
            example = (CASES[0],) if values is cases else (0, 1)
            raise ConfigError(
                f"{name} must be a non-empty tuple, such as {example}, got {shown(values)}."
            )
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:  # each would be run again, and its rows listed twice in the table
            raise ConfigError(f"{name} names {repeated} more than once; give each once.")
    known = {*PRESETS, *(planted or {})}
    unknown = [c for c in cases if not isinstance(c, str) or c not in known]
    if unknown:
        raise ConfigError(
            f"Unknown case(s) {unknown} for --cases; expected some of: {sorted(known)}."
        )
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"A seed of `seeds` must be an integer, got {shown(seed)}.")
        in_range("seeds", int(seed), 0, MAX_SEED)
