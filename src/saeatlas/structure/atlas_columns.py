"""The kinds of an Atlas directory's table columns (:mod:`.atlas_tables` checks the
tables against each other): a column edited by hand into another kind is refused by
name, not drawn wrong or half-way by the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .atlas_format import OPTIONAL_TABLES, AtlasFileError

if TYPE_CHECKING:
    from .atlas import Atlas


#: Kinds of the table columns the report and other tools read (``module`` columns have
#: their own check): ``i`` integers, ``n`` counts (integers 0 or more), ``f`` numbers,
#: ``p`` numbers 0 or more,
#: ``u`` numbers from 0 to 1 (or NaN: not measured), ``c`` numbers from -1 to 1 (a
#: correlation, a module's modularity term), ``b`` true or false, ``s`` text, ``l`` lists
#: of numbers, ``w`` lists of shares (each from 0 to 1), ``t`` lists of text. Columns that
#: are absent are not checked (older atlases lack some; every reader requires
#: :data:`REQUIRED_COLUMNS`), but :data:`PAIRED_COLUMNS` come together.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "units": {
        "unit": "i",
        "index": "n",
        "layer": "s",
        "membership": "u",
        "coupling": "c",
        "shared": "b",
    },
    "features": {
        "feature": "i",
        **dict.fromkeys(("density", "firing_density", "selectivity"), "u"),
        # kept out of the modules (and counted in atlas.json's headline)
        **dict.fromkeys(("dense", "global_mode"), "b"),
        # the map's coordinates: lists there ended the report in plotly's ValueError; the
        # module cards rank features by `attribution` (text was ranked as text, a list
        # ended the report in a ValueError)
        **dict.fromkeys(("mean_activation", "max_unit_corr", "x", "y", "attribution"), "f"),
        **dict.fromkeys(("top_unit_weights", "top_read_weights"), "l"),
        "layer_mass": "w",
    },
    "modules": {
        # (sizes are compared with the members that units and features count)
        **dict.fromkeys(("n_units", "n_features"), "i"),
        # a count of -5 random sets was shown as "-5 random sets" beside the p it gives
        **dict.fromkeys(("n_shared_units", "ablation_draws"), "n"),
        "z": "f",
        # a module's term of the modularity lies in [-1, 1/4]: 7 was shown as it stood
        "modularity": "c",
        **dict.fromkeys(("p", "reproducibility", "stability", "selectivity_p"), "u"),
        # the report's cards and the run's table print it ('None' ended in a TypeError)
        "selectivity": "u",
        **dict.fromkeys(
            ("correlation_jaccard", "control_jaccard", "ablation_p", "ablation_q"), "u"
        ),
        **dict.fromkeys(("ablation_effect", "ablation_z", "ablation_random_mean"), "f"),
        **dict.fromkeys(("significant", "counted", "visible_without_sae"), "b"),
        # shares of the module's units (decoder energy) per layer, drawn as a heat map
        **dict.fromkeys(("layer_profile", "layer_mass"), "w"),
        "label_means": "l",
        "layers": "t",
    },
    "examples": {"kind": "s", "id": "i", **dict.fromkeys(("rank", "row"), "n"), "activation": "f"},
    "flows": {
        **dict.fromkeys(("source_module", "target_module"), "i"),
        **dict.fromkeys(("source_layer", "target_layer"), "s"),
        # a Pearson correlation ("co-activation r +7.00" was drawn as the strongest link),
        # and a ratio of mean absolute gains
        "coactivation": "c",
        "weight_flow": "p",
    },
    "ablation": dict.fromkeys(("effect", "random_effect", "specialisation"), "f"),
}
#: Columns the report cannot do without (the rest are shown when present); optional
#: tables need theirs when they have rows.
REQUIRED_COLUMNS = {
    "units": ("unit", "layer", "index", "module"),
    "features": ("feature", "module"),
    "modules": ("module", "n_units", "n_features"),
    "examples": ("kind", "id", "rank", "row", "activation"),
    "flows": ("source_module", "target_module"),
    # the report's module x label grids (a KeyError half-way through it)
    "ablation": ("module", "label", "effect", "random_effect", "specialisation"),
}
#: Of those, the ones every reader needs (``Atlas.load`` and ``save``): the numbers that
#: name units and features (the Neuronpedia export ended in a KeyError without them), and
#: the optional tables' columns; an atlas built by hand may lack the rest.
KEY_COLUMNS = {
    "units": ("unit",),
    "features": ("feature",),
    **{name: REQUIRED_COLUMNS[name] for name in OPTIONAL_TABLES},
}
#: Columns of modules.parquet that come together: the report shows each module's
#: ablation effect with its p-value (without ``ablation_p`` it ended in an AttributeError).
PAIRED_COLUMNS = (("z", "p"), ("ablation_effect", "ablation_p"))
#: Column prefixes of modules.parquet's figures per null model (``z_permutation``, ...).
NULL_COLUMNS = {"z_": "f", "p_": "u"}
_KIND_NAMES = {
    "i": "integers",
    "n": "whole numbers 0 or more",
    "f": "numbers (finite, or NaN where not measured)",
    "p": "numbers 0 or more (finite, or NaN where not measured)",
    "u": "numbers from 0 to 1",
    "c": "numbers from -1 to 1",
    "b": "true or false",
    "s": "text",
    "l": "lists of numbers, each finite",
    "w": "lists of shares, each from 0 to 1",
    "t": "lists of layer names",
}


def _column_ok(col: pd.Series, kind: str) -> bool:
    types = pd.api.types
    if kind in "in":
        integers = types.is_integer_dtype(col) and not types.is_bool_dtype(col)
        return integers and not (kind == "n" and bool((col < 0).any()))
    if kind in "fpuc":
        if not types.is_numeric_dtype(col) or types.is_bool_dtype(col):
            return False
        if kind in "fp":  # NaN is a figure not measured; no analysis writes an Inf
            values = col.to_numpy(np.float64, na_value=np.nan)
            return not bool(np.isinf(values).any() or (kind == "p" and (values < 0).any()))
        return not bool(((col < (-1 if kind == "c" else 0)) | (col > 1)).any())
    if kind == "b":
        return types.is_bool_dtype(col)
    if kind == "s":
        return all(isinstance(v, str) for v in col)
    if kind == "t":  # a text is no list of names: 'act1' was shown as layers a, c, t, 1
        return all(
            not isinstance(v, (str, bytes))
            and np.ndim(v) == 1
            and all(isinstance(x, str) for x in v)
            for v in col
        )
    try:  # lists of numbers (of shares: from 0 to 1)
        arrays = [np.asarray(v, np.float64) for v in col]
        shares = kind == "w"
        return all(
            a.ndim == 1
            and not np.isinf(a).any()
            and not (shares and ((a < 0) | (a > 1) | np.isnan(a)).any())
            for a in arrays
        )
    except (TypeError, ValueError):
        return False


def check_required(atlas: Atlas, path: Path, fix: str, *, report: bool = False) -> None:
    """Refuse a table with rows without a column of :data:`KEY_COLUMNS` (``report``: of
    :data:`REQUIRED_COLUMNS`, also in a required table of no rows: the report shows every
    table): the Neuronpedia export ended in a KeyError, and a column set as a table's
    index in Python (``set_index('feature')``) was saved without it."""
    for name, needed in (REQUIRED_COLUMNS if report else KEY_COLUMNS).items():
        frame = getattr(atlas, name)
        if frame.empty and (name in OPTIONAL_TABLES or not report):
            continue  # an optional table with no rows is not written
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            index = [n for n in frame.index.names if n in missing]
            hint = (
                f" ({', '.join(f'`{n}`' for n in index)} is the table's index, which is not "
                f"saved: call {name} = {name}.reset_index() first)"
                if index
                else ""
            )
            raise AtlasFileError(
                f"{name}.parquet in '{path}' lacks the columns {missing}{hint}; {fix}."
            )


def check_columns(atlas: Atlas, path: Path, fix: str) -> None:
    """Refuse a table column of :data:`TABLE_COLUMNS` of another kind (a table edited by
    hand: the report failed on it half-way, with a traceback)."""
    for name, columns in TABLE_COLUMNS.items():
        frame = getattr(atlas, name)
        if name == "modules":  # one z and p per null model, named after it
            columns = {
                **{c: NULL_COLUMNS[c[:2]] for c in frame.columns if str(c)[:2] in NULL_COLUMNS},
                **columns,
            }
        for column, kind in columns.items():
            if column in frame.columns and len(frame) and not _column_ok(frame[column], kind):
                col = frame[column]
                low = -1 if kind == "c" else 0
                if col.dtype.kind not in "iuf":  # the first value that is not of the kind
                    wrong = [not _column_ok(col.iloc[i : i + 1], kind) for i in range(len(col))]
                    outside = pd.Series(wrong, index=col.index)
                elif kind in "fp":
                    outside = col.isin([np.inf, -np.inf]) | ((col < 0) if kind == "p" else False)
                elif kind == "n":
                    outside = col < 0
                else:
                    outside = (col < low) | (col > 1)
                example = col[outside].iloc[0] if outside.any() else col.iloc[0]
                if isinstance(example, (np.generic, np.ndarray)):  # np.float64(...), array(...)
                    example = example.tolist()
                raise AtlasFileError(
                    f"`{column}` of {name}.parquet in '{path}' must hold {_KIND_NAMES[kind]}, "
                    f"not {col.dtype} such as {example!r}; {fix}."
                )
    for pair in PAIRED_COLUMNS:
        if len(set(pair) & set(atlas.modules.columns)) == 1:
            raise AtlasFileError(
                f"modules.parquet in '{path}' has one of the columns `{pair[0]}` and "
                f"`{pair[1]}` without the other; {fix}."
            )
