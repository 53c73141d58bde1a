"""``saeatlas validate``: the atlas and its baselines on activations with planted structure.

For every case (a preset of :mod:`.planted`) and seed: generate the data, train
a TopK SAE on it, run :func:`~saeatlas.structure.map_structure`, and score the
unit modules against the planted ones by the adjusted Rand index (ARI; free
units count as one group of their own). Baselines partition the units'
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

from ...store import ActivationStore
from ...train import TrainConfig, train_sae
from ..config import AtlasConfig
from ..graph.finders import LeidenModules
from ..graph.units import unit_correlation_graph
from ..mapping import map_structure
from .config import PlantedConfig
from .planted import make_planted, save_planted

CASES = ("easy", "superposition", "null", "null_superposition")


@dataclass(frozen=True)
class ValidationSettings:
    """Sizes of one validation run (the defaults take about a minute per case on 2 cores)."""

    n_rows: int = 20_000
    d_sae: int = 512
    k: int = 16
    tokens: int = 400_000
    batch_size: int = 1024
    n_null: int = 5


def _baseline(x: np.ndarray, clean: bool) -> np.ndarray:
    corr = np.corrcoef(x.T)
    corr = np.nan_to_num(corr)
    graph = unit_correlation_graph(corr, x.shape[0], clean=clean)
    return LeidenModules(random_state=0).fit(graph).labels_


def validate_case(
    case: str, seed: int = 0, settings: ValidationSettings = ValidationSettings()
) -> list[dict]:
    """Score the atlas and the baselines on one planted case and seed."""
    data = make_planted(PlantedConfig.preset(case, seed=seed, n_rows=settings.n_rows))
    truth = data.unit_module
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore.open(save_planted(data, Path(tmp) / "planted"))
        t0 = time.perf_counter()
        sae = train_sae(
            store,
            TrainConfig(
                d_sae=settings.d_sae,
                k=settings.k,
                tokens=settings.tokens,
                batch_size=settings.batch_size,
                seed=seed,
            ),
            progress=False,
        ).sae
        atlas = map_structure(
            sae, store, AtlasConfig(n_null=settings.n_null, null_rows=settings.n_rows, seed=seed)
        )
        seconds = time.perf_counter() - t0
    s = atlas.summary
    rows.append(
        {
            "case": case,
            "seed": seed,
            "method": "atlas",
            "ari": adjusted_rand_score(truth, atlas.units.module),
            "n_modules": s["n_modules"],
            "n_significant": s["n_significant_modules"],
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
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


def validate(
    cases: tuple[str, ...] = CASES,
    seeds: tuple[int, ...] = (0,),
    settings: ValidationSettings = ValidationSettings(),
) -> pd.DataFrame:
    """The table of cases x methods x seeds with their scores."""
    rows = []
    for case in cases:
        for seed in seeds:
            rows.extend(validate_case(case, seed, settings))
    return pd.DataFrame(rows)
