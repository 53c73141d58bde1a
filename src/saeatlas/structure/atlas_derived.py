"""The figures of an Atlas directory's modules.parquet that other columns give
(:func:`.atlas_tables.check_tables` calls :func:`check_derived`): a module's
``layer_profile`` is the share of its units (units.parquet) in each layer, its
``stability`` is its ``reproducibility``, and its ``preferred_label`` and ``selectivity``
are the class of its highest ``label_means`` and their tuning index. Each was shown as it
stood when edited by hand (a module counted as reproducible described as recovered by
"0.10 of the ensemble's members", another class than its label means' named as the one it
prefers, the layer x module map drawn against units that lie elsewhere). Shares of
``layer_mass`` add up to 1, and top examples are ranked by their activations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .atlas_format import AtlasFileError

if TYPE_CHECKING:
    from .atlas import Atlas


def check_derived(atlas: Atlas, path: Path, fix: str) -> None:
    """Refuse a module figure of modules.parquet that is not the one its other columns
    give (checked where the atlas has the columns: older atlases lack some)."""
    _check_mass(atlas, path, fix)
    _check_example_ranks(atlas, path, fix)
    _check_specialisation(atlas, path, fix)
    _check_dense(atlas, path, fix)
    m = atlas.modules
    if m.empty:
        return
    _check_profile(atlas, path, fix)
    # atlases before the ensemble held a bootstrap Jaccard here, with its verdict
    if {"stability", "reproducibility"} <= set(m.columns) and "stability_verdict" not in m:
        got, want = m["stability"].to_numpy(np.float64), m["reproducibility"].to_numpy(np.float64)
        _refuse_unequal(m, got, want, "stability", "its `reproducibility` is", path, fix)
    _check_labels(atlas, path, fix)


def _refuse_unequal(
    m: pd.DataFrame, got: np.ndarray, want: np.ndarray, column: str, what: str, path: Path, fix: str
) -> None:
    close = np.isclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    if close.all():
        return
    i = int(np.flatnonzero(~close)[0])
    raise AtlasFileError(
        f"`{column}` of module {int(m['module'].iloc[i])} in modules.parquet in '{path}' is "
        f"{_shown(got[i])}, but {what} {_shown(want[i])}; {fix}."
    )


def _shown(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [round(float(v), 4) for v in value]
    return round(float(value), 4) if isinstance(value, (float, np.floating)) else value


def _check_profile(atlas: Atlas, path: Path, fix: str) -> None:
    """``layer_profile``: the fraction of the module's units (units.parquet) in each of
    the atlas's layers, in ``atlas.json``'s order."""
    from .describe.layers import module_layer_profile

    m, units = atlas.modules, atlas.units
    if "layer_profile" not in m.columns or not {"layer", "module"} <= set(units.columns):
        return
    layers = atlas.summary.get("layers")
    if not isinstance(layers, list):
        layers = list(dict.fromkeys(units["layer"]))
    index = {name: i for i, name in enumerate(layers)}
    unit_layer = units["layer"].map(index)
    if unit_layer.isna().any():
        return  # (a layer the atlas lacks is refused by name)
    want = module_layer_profile(
        units["module"].to_numpy(np.int64),
        unit_layer.to_numpy(np.int64),
        len(layers),
        n_modules=len(m),
    )
    for i, given in enumerate(m["layer_profile"]):
        got = np.asarray(given, np.float64)
        if got.shape != want[i].shape or not np.allclose(got, want[i], rtol=1e-9, atol=1e-12):
            raise AtlasFileError(
                f"`layer_profile` of module {int(m['module'].iloc[i])} in modules.parquet in "
                f"'{path}' is {_shown(got)}, but its units in units.parquet give "
                f"{_shown(want[i])} (their share in each layer of {layers[:8]}); {fix}."
            )


def _check_mass(atlas: Atlas, path: Path, fix: str) -> None:
    """``layer_mass`` (of a feature, or a module): shares of its write energy per layer,
    which add up to 1 (all 0 for a feature that writes nothing, a module without features):
    shares of 0.9 in each of three layers were drawn as they stood."""
    for name in ("features", "modules"):
        frame = getattr(atlas, name)
        if "layer_mass" not in frame.columns or frame.empty:
            continue
        sums = np.array([np.sum(np.asarray(v, np.float64)) for v in frame["layer_mass"]])
        bad = ~(np.isclose(sums, 1, rtol=0, atol=1e-6) | (sums == 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AtlasFileError(
                f"`layer_mass` of {name}.parquet in '{path}' adds up to {sums[i]:.4g} in row {i}, "
                f"not 1: it holds the shares of the write energy in each layer; {fix}."
            )


def _check_example_ranks(atlas: Atlas, path: Path, fix: str) -> None:
    """examples.parquet: each feature's and module's rows ranked 1, 2, ... by falling
    activation (rank 1 the most active): activations edited to rise with the rank were
    listed as the item's top examples."""
    ex = atlas.examples
    if ex.empty or not {"kind", "id", "rank", "activation"} <= set(ex.columns):
        return
    ex = ex.sort_values(["kind", "id", "rank"], kind="stable")
    group = ex.groupby(["kind", "id"], sort=False)
    want = group.cumcount().to_numpy() + 1
    rises = group["activation"].diff().to_numpy(np.float64) > 0
    bad = (ex["rank"].to_numpy() != want) | rises
    if bad.any():
        row = ex.iloc[int(np.flatnonzero(bad)[0])]
        raise AtlasFileError(
            f"examples.parquet in '{path}' ranks {row['kind']} {row['id']}'s rows otherwise "
            f"than 1, 2, ... by falling activation (rank {row['rank']}, activation "
            f"{row['activation']:.4g}); {fix}."
        )


def _check_labels(atlas: Atlas, path: Path, fix: str) -> None:
    """``preferred_label``: the class of ``atlas.json``'s ``label_classes`` whose
    ``label_means`` entry is the highest (none for a module that never fires), and
    ``selectivity`` their tuning index (:func:`.describe.profiles.selectivity_index`)."""
    from .describe.profiles import selectivity_index

    m, classes = atlas.modules, atlas.summary.get("label_classes")
    if "label_means" not in m.columns or not isinstance(classes, list) or len(classes) < 2:
        return
    means = np.asarray([np.asarray(v, np.float64) for v in m["label_means"]])
    if means.shape != (len(m), len(classes)):
        return  # (lists of another length are refused by name)
    index, preferred = np.full(len(m), np.nan), np.full(len(m), -1)
    measured = ~np.isnan(means).any(axis=1)  # a module without features has no means
    if measured.any():
        index[measured], preferred[measured] = selectivity_index(means[measured])
    if "preferred_label" in m.columns:
        want = [str(classes[i]) if i >= 0 else None for i in preferred]
        got = [None if _missing(v) else str(v) for v in m["preferred_label"]]
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise AtlasFileError(
                    f"`preferred_label` of module {int(m['module'].iloc[i])} in modules.parquet "
                    f"in '{path}' is {g!r}, but its `label_means` over atlas.json's "
                    f"`label_classes` prefer {w!r}; {fix}."
                )
    if "selectivity" in m.columns:
        got = m["selectivity"].to_numpy(np.float64, na_value=np.nan)
        _refuse_unequal(m, got, index, "selectivity", "its `label_means` give", path, fix)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _check_specialisation(atlas: Atlas, path: Path, fix: str) -> None:
    """ablation.parquet's ``specialisation``: each label's share of the module's damage
    beyond random unit sets (``effect`` less ``random_effect``, from 0), over the labels of
    that module (all 0 where there is none): edited, it was drawn in the module x label
    grid against the effects beside it."""
    a = atlas.ablation
    cols = {"module", "effect", "random_effect", "specialisation"}
    if a.empty or not cols <= set(a.columns):
        return
    try:
        excess = np.clip(
            a["effect"].to_numpy(np.float64, na_value=np.nan)
            - a["random_effect"].to_numpy(np.float64, na_value=np.nan),
            0,
            None,
        )
        got = a["specialisation"].to_numpy(np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return  # (the columns' kinds are refused by name)
    module = a["module"].to_numpy()
    total = pd.Series(excess).groupby(module).transform("sum").to_numpy(copy=True)
    undefined = pd.Series(np.isnan(excess)).groupby(module).transform("max").to_numpy(bool)
    total[undefined] = np.nan  # NumPy's sum, as the ablation's, of a module with a NaN
    want = np.divide(excess, total, out=np.zeros_like(excess), where=total > 0)
    close = np.isclose(got, want, rtol=1e-6, atol=1e-9, equal_nan=True)
    if not close.all():
        i = int(np.flatnonzero(~close)[0])
        raise AtlasFileError(
            f"`specialisation` of ablation.parquet in '{path}' is {_shown(got[i])} in row {i} "
            f"(module {_shown(a['module'].iloc[i])}), but its `effect` and `random_effect` "
            f"give {_shown(want[i])} (the label's share of the module's damage beyond random "
            f"sets); {fix}."
        )


def _check_dense(atlas: Atlas, path: Path, fix: str) -> None:
    """A feature is ``dense`` (kept out of the modules, and counted so in the headline)
    exactly when its ``firing_density`` is above ``config.max_density``: two features'
    flags swapped by hand passed the count, and a feature firing on 90% of the rows was
    drawn as a module's member."""
    f, config = atlas.features, atlas.summary.get("config")
    most = config.get("max_density") if isinstance(config, dict) else None
    if f.empty or not {"dense", "firing_density"} <= set(f.columns):
        return
    if not isinstance(most, (int, float)) or isinstance(most, bool):
        return
    try:
        dense = f["dense"].to_numpy(bool)
        density = f["firing_density"].to_numpy(np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return  # (the columns' kinds are refused by name)
    # (atlases before the excluded features' own counts held a dense one's density as 0)
    wrong = (dense & (density > 0) & (density < most - 1e-9)) | (~dense & (density > most + 1e-9))
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise AtlasFileError(
            f"features.parquet in '{path}' marks feature {i} `dense` {bool(dense[i])} with a "
            f"`firing_density` of {density[i]:.4g}, but features are dense exactly above "
            f"atlas.json's `config.max_density` {most:g}; {fix}."
        )
