"""What an Atlas directory holds (:mod:`.atlas`): its files, the kinds of the entries of
``atlas.json`` and of the tables' columns, and the checks :meth:`.atlas.Atlas.load` makes,
so that an atlas edited by hand, or put together from two analyses, is refused by name
rather than shown under a headline its tables contradict. A change to the format
changes this file; reading and writing it is :mod:`.atlas`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import AtlasError

if TYPE_CHECKING:
    from .atlas import Atlas

ATLAS_JSON = "atlas.json"
TABLES = ("units", "features", "modules")
#: Written when not empty.
OPTIONAL_TABLES = ("examples", "flows", "ablation")
FORMAT_VERSION = 1
#: The report's figures (``figures/``), which each report replaces whole.
FIGURE_FILES = (
    "feature_map.png",
    "layer_module.png",
    "module_graph.png",
    "pareto.png",
    "specialisation.png",
)


def is_report_entry(p: Path) -> bool:
    """Whether ``p``, in an atlas directory, is the report or its figures folder holding
    only figures, also as a killed report left it (``.figures.partial``, ``.figures.old``,
    its lock ``.figures.lock``): an analysis's ``--overwrite`` and the next report
    replace these whole, so a folder holding anything else is no report's."""
    if p.name in ("report.html", ".figures.lock"):
        return not p.is_dir()
    if p.name not in ("figures", ".figures.partial", ".figures.old"):
        return False
    return p.is_dir() and not p.is_symlink() and all(is_figure(c) for c in p.iterdir())


def is_figure(p: Path) -> bool:
    """Whether ``p`` is a file a report writes into ``figures/`` (or its temporary file)."""
    return p.name in FIGURE_FILES or p.name.startswith(".tmp-")


class AtlasFileError(AtlasError):
    """An Atlas directory is missing, incomplete or unreadable."""


_NONE = type(None)
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    _NONE: "null",
    bool: "true or false",
    str: "text",
    list: "a list",
    dict: "an object",
}
#: Types of the ``atlas.json`` entries the report and other tools read: a file edited
#: by hand or damaged is refused by name, not rendered wrong or half-way. The verdict
#: and its counts are always there; the others are null when their step did not run.
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("n_modules", "n_significant_modules", "n_sae_only_modules"), (int,)),
    "significant": (bool,),
    **dict.fromkeys(("verdict", "message"), (str,)),
    **dict.fromkeys(
        ("modularity", "z", "p", "null_mean", "null_std", "mean_l0", "fvu"),
        (int, float, _NONE),
    ),
    "n_rows_encoded": (int, _NONE),
    **dict.fromkeys(("store", "store_fingerprint"), (str, _NONE)),
    "partition_significant": (bool, _NONE),
    **dict.fromkeys(("module_kind", "modules_from", "strictest_null", "method"), (str, _NONE)),
    "format_version": (int,),
    "nulls": (list,),
    "layers": (list, _NONE),
    **dict.fromkeys(
        (
            "ensemble",
            "control",
            "sae",
            "graph",
            "config",
            "sae_modules",
            "stability",
            "ablation",
            "sweep_modules",
            "cross_check",
        ),
        (dict, _NONE),
    ),
    "label_classes": (list, _NONE),
}


_NUMBER = (int, float, _NONE)
_NULL_TEST = {
    "null": (str,),
    **dict.fromkeys(("modularity", "null_mean", "null_std", "z", "p", "p_empirical"), _NUMBER),
    "n_draws": (int,),
}
_COUNTS = (int, _NONE)
#: Types inside the objects of ``atlas.json`` that the report and other tools read, by
#: path: ``a.b`` the object ``b`` in ``a``, ``a[]`` every item of the list ``a``, ``a{}``
#: every value of the object ``a``; an object's keys, or one type for every item. Keys
#: that are absent are not checked (older atlases lack some), except :data:`NESTED_KEYS`.
NESTED_TYPES: dict[str, dict[str, tuple[type, ...]] | tuple[type, ...]] = {
    "nulls[]": _NULL_TEST,
    "sae_modules": {
        **dict.fromkeys(("n_modules", "n_significant_modules", "n_units"), (int,)),
        "nulls": (list,),
    },
    "sae_modules.nulls[]": _NULL_TEST,
    "sae": {
        **dict.fromkeys(("path", "architecture", "fingerprint"), (str, _NONE)),
        **dict.fromkeys(("d_in", "d_sae", "k"), _COUNTS),
    },
    "graph": {
        **dict.fromkeys(("n_rows", "n_edges", "n_tests", "window"), (int,)),
        "edge_alpha": _NUMBER,
    },
    "ensemble": {
        **dict.fromkeys(("n_saes", "n_bootstrap", "n_members"), (int,)),
        **dict.fromkeys(("scale", "agreement"), _NUMBER),
        "levels": (list,),
    },
    "ensemble.levels[]": {
        "scale": _NUMBER,
        "chosen": (bool,),
        **dict.fromkeys(("n_reproducible_modules", "n_consensus_modules"), (int,)),
    },
    "stability": {
        "thresholds": (dict,),
        **dict.fromkeys(("bootstrap_ari", "seed_unit_ari"), (list,)),
        **dict.fromkeys(
            ("n_bootstrap", "n_seeds", "n_stable_modules", "n_dissolved_modules"), (int,)
        ),
    },
    "stability.thresholds{}": _NUMBER,
    "stability.bootstrap_ari[]": _NUMBER,
    "stability.seed_unit_ari[]": _NUMBER,
    "ablation": {
        **dict.fromkeys(("mode", "label_column"), (str, _NONE)),
        "n_random": _COUNTS,
        "clean_loss": _NUMBER,
    },
    **{
        name: {
            **dict.fromkeys(("n_modules", "n_significant_modules"), _COUNTS),
            "significant": (bool,),
            **dict.fromkeys(("modularity", "unit_ari", "unit_ami"), _NUMBER),
            **dict.fromkeys(("z", "p"), (dict, _NONE)),
            "verdict": (str, _NONE),
            "real": (dict, _NONE),
        }
        for name in ("control", "control.real")
    },
    **{f"{name}.{zp}{{}}": _NUMBER for name in ("control", "control.real") for zp in "zp"},
    "sweep_modules": {
        "over": (str,),
        **dict.fromkeys(("values", "neighbour_ari", "atlas_ari"), (list,)),
    },
    "sweep_modules.values[]": (int, float),
    "sweep_modules.neighbour_ari[]": _NUMBER,
    "sweep_modules.atlas_ari[]": _NUMBER,
    # the views by name (atlases before them held one view's figures here)
    **{f"cross_check.{view}": {"partition_significant": (bool,)} for view in ("raw", "clean")},
    "layers[]": (str,),
}
#: Keys the objects at these paths must have (read without a default).
NESTED_KEYS: dict[str, tuple[str, ...]] = {
    "nulls[]": ("null", "z", "p"),
    "sae_modules.nulls[]": ("null", "z", "p"),
    "sweep_modules": ("over", "values", "neighbour_ari", "atlas_ari"),
}


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    return not isinstance(value, types) or (isinstance(value, bool) and bool not in types)


def _want(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES[t] for t in types)


def _entries(summary: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """``(name, value)`` of every entry of ``summary`` at ``path`` (see
    :data:`NESTED_TYPES`); none where a step is absent or null."""
    found = [("", summary)]
    for step in path.split("."):
        key, each = step.rstrip("[]{}"), step[len(step.rstrip("[]{}")) :]
        found = [
            (f"{name}.{key}" if name else key, obj[key])
            for name, obj in found
            if isinstance(obj, dict) and obj.get(key) is not None
        ]
        if each == "[]":
            found = [(f"{n}[{i}]", v) for n, items in found for i, v in enumerate(items)]
        elif each == "{}":
            found = [(f"{n}.{k}", v) for n, items in found for k, v in items.items()]
    return found


def _check_nested(summary: dict[str, Any], meta: Path, fix: str) -> None:
    """Refuse an entry inside an object of ``summary`` whose type is not the one of
    :data:`NESTED_TYPES`, or a key of :data:`NESTED_KEYS` that is missing (an edited
    file, whose report would fail half-way with a traceback or show wrong figures).
    A parent's type is checked before its items are read (the paths are in order)."""
    for path, spec in NESTED_TYPES.items():
        for name, value in _entries(summary, path):
            if isinstance(spec, tuple):
                if _wrong_type(value, spec):
                    raise AtlasFileError(
                        f"`{name}` in '{meta}' must be {_want(spec)}, got {value!r}; {fix}."
                    )
                continue
            if not isinstance(value, dict):
                raise AtlasFileError(
                    f"`{name}` in '{meta}' must be an object, got {value!r}; {fix}."
                )
            missing = [k for k in NESTED_KEYS.get(path, ()) if k not in value]
            if missing:
                raise AtlasFileError(
                    f"`{name}` in '{meta}' has no {', '.join(f'`{k}`' for k in missing)}; {fix}."
                )
            for key, types in spec.items():
                if key in value and _wrong_type(value[key], types):
                    raise AtlasFileError(
                        f"`{name}.{key}` in '{meta}' must be {_want(types)}, got "
                        f"{value[key]!r}; {fix}."
                    )


def check_summary(summary: Any, meta: Path) -> dict[str, Any]:
    """``summary`` (``meta``'s content) when it is an object whose entries have the
    types of :data:`SUMMARY_TYPES` (inside its objects, :data:`NESTED_TYPES`) and a
    known ``verdict``."""
    from .inference.outcome import VERDICTS

    fix = "rerun `saeatlas analyze` with --overwrite to write it again"
    if not isinstance(summary, dict):
        raise AtlasFileError(
            f"'{meta}' must hold a JSON object, not {type(summary).__name__}; {fix}."
        )
    for key, types in SUMMARY_TYPES.items():
        value = summary.get(key)
        if key in summary and _wrong_type(value, types):
            raise AtlasFileError(
                f"`{key}` in '{meta}' must be {_want(types)}, got {value!r}; {fix}."
            )
    version = summary.get("format_version", FORMAT_VERSION)
    if not 1 <= version <= FORMAT_VERSION:
        raise AtlasFileError(
            f"'{meta}' has format_version {version}; this saeatlas reads 1 to "
            f"{FORMAT_VERSION}. Upgrade saeatlas, or {fix}."
        )
    _check_nested(summary, meta, fix)
    if "verdict" in summary and summary["verdict"] not in VERDICTS:
        raise AtlasFileError(
            f"`verdict` in '{meta}' is {summary['verdict']!r}, not one of {list(VERDICTS)}; {fix}."
        )
    return summary


#: Kinds of the table columns the report and other tools read (``module`` columns have
#: their own check): ``i`` integers, ``f`` numbers, ``u`` numbers from 0 to 1 (or NaN:
#: not measured), ``b`` true or false, ``s`` text, ``l`` lists of numbers, ``t`` lists of text. Columns that are absent are not checked (older atlases lack
#: some; the report requires its own, :data:`..report.data.REQUIRED_COLUMNS`), but ``z``
#: and ``p`` come together.
TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "units": {
        **dict.fromkeys(("unit", "index"), "i"),
        "layer": "s",
        "membership": "u",
        "coupling": "f",
        "shared": "b",
    },
    "features": {
        "feature": "i",
        "density": "u",
        **dict.fromkeys(("mean_activation", "max_unit_corr"), "f"),
        **dict.fromkeys(("top_unit_weights", "top_read_weights", "layer_mass"), "l"),
    },
    "modules": {
        **dict.fromkeys(("n_units", "n_features"), "i"),
        **dict.fromkeys(("modularity", "z"), "f"),
        **dict.fromkeys(("p", "reproducibility", "stability"), "u"),
        "significant": "b",
        **dict.fromkeys(("layer_profile", "layer_mass", "label_means"), "l"),
        "layers": "t",
    },
    "examples": {"kind": "s", **dict.fromkeys(("id", "rank", "row"), "i"), "activation": "f"},
    "flows": {
        **dict.fromkeys(("source_module", "target_module"), "i"),
        **dict.fromkeys(("coactivation", "weight_flow"), "f"),
    },
}
_KIND_NAMES = {
    "i": "integers",
    "f": "numbers",
    "u": "numbers from 0 to 1",
    "b": "true or false",
    "s": "text",
    "l": "lists of numbers",
    "t": "lists of layer names",
}


def _column_ok(col: pd.Series, kind: str) -> bool:
    types = pd.api.types
    if kind == "i":
        return types.is_integer_dtype(col) and not types.is_bool_dtype(col)
    if kind in "fu":
        if not types.is_numeric_dtype(col) or types.is_bool_dtype(col):
            return False
        return kind == "f" or not bool(((col < 0) | (col > 1)).any())
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
    try:  # lists of numbers
        return all(np.asarray(v, np.float64).ndim == 1 for v in col)
    except (TypeError, ValueError):
        return False


def _check_columns(atlas: Atlas, path: Path, fix: str) -> None:
    """Refuse a table column of :data:`TABLE_COLUMNS` of another kind (a table edited by
    hand: the report failed on it half-way, with a traceback)."""
    for name, columns in TABLE_COLUMNS.items():
        frame = getattr(atlas, name)
        for column, kind in columns.items():
            if column in frame.columns and len(frame) and not _column_ok(frame[column], kind):
                col = frame[column]
                outside = (col < 0) | (col > 1) if col.dtype.kind in "iuf" else col.isna()
                example = col[outside].iloc[0] if outside.any() else col.iloc[0]
                if isinstance(example, np.generic):  # its repr is np.float64(...)
                    example = example.item()
                raise AtlasFileError(
                    f"`{column}` of {name}.parquet in '{path}' must hold {_KIND_NAMES[kind]}, "
                    f"not {col.dtype} such as {example!r}; {fix}."
                )
    if len({"z", "p"} & set(atlas.modules.columns)) == 1:
        raise AtlasFileError(
            f"modules.parquet in '{path}' has one of the columns `z` and `p` without the "
            f"other; {fix}."
        )


def _unit_numbers(top: Any) -> np.ndarray:
    """One feature's ``top_units`` as integers; ``ValueError`` for anything else (floats
    were cast, and the report then indexed a list with them: a traceback)."""
    arr = np.asarray(top)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"unit numbers of dtype {arr.dtype}")
    return arr.astype(np.int64).ravel()


def check_tables(atlas: Atlas, path: Path) -> None:
    """Refuse an atlas whose files disagree (one edited by hand, or put together from two
    analyses): modules numbered ``0..n-1`` once each, units and features naming only
    those (or -1), each unit once, and ``atlas.json``'s verdict and counts the ones its
    tables give (:func:`.inference.outcome.decide`), so that no page or tool shows a
    headline that the tables below it contradict."""
    from .atlas import Atlas
    from .inference.outcome import decide

    fix = "rerun `saeatlas analyze` with --overwrite to write it again"
    _check_columns(atlas, path, fix)
    modules, s = atlas.modules, atlas.summary
    n = len(modules)
    if "module" in modules.columns and n:
        ids = modules["module"]
        if not pd.api.types.is_integer_dtype(ids) or ids.tolist() != list(range(n)):
            raise AtlasFileError(
                f"modules.parquet in '{path}' numbers its {n} modules {ids.tolist()[:10]}, "
                f"not 0 to {n - 1} in order; {fix}."
            )
    units = atlas.units.get("unit")
    d_sae = s["sae"].get("d_sae") if isinstance(s.get("sae"), dict) else None
    for name, ids, size in (
        ("unit", units, None),
        ("feature", atlas.features.get("feature"), d_sae),
    ):
        # a feature listed twice, or past the SAE's latents, was drawn as one of the map's
        if ids is not None and (
            ids.tolist() != list(range(len(ids))) or size not in (None, len(ids))
        ):
            of = f" (the SAE's {size})" if size is not None else ""
            raise AtlasFileError(
                f"{name}s.parquet in '{path}' must list each {name}{of} once, numbered 0, 1, "
                f"2, ... in order; {fix}."
            )
    if {"layer", "index"} <= set(atlas.units.columns):
        _check_layers(atlas.units, s.get("layers"), path, fix)
    for name in ("units", "features", "ablation"):
        frame = getattr(atlas, name)
        if "module" not in frame.columns or frame.empty:
            continue
        col = frame["module"]
        bad = ~col.isin(range(-1, n)) if pd.api.types.is_integer_dtype(col) else col.notna()
        if bad.any():
            raise AtlasFileError(
                f"{name}.parquet in '{path}' names the module {col[bad].tolist()[0]!r}, not "
                f"one of the {n} modules of modules.parquet (or -1, none); {fix}."
            )
        size = f"n_{name}"  # a module's size is the count of its members
        if name != "ablation" and size in modules.columns and n:
            counts = np.bincount(col[col >= 0].to_numpy(np.int64), minlength=n)
            if modules[size].tolist() != counts.tolist():
                raise AtlasFileError(
                    f"`{size}` of modules.parquet in '{path}' is {modules[size].tolist()[:10]}, "
                    f"but {name}.parquet puts {counts.tolist()[:10]} in the modules; {fix}."
                )
    for col in ("top_units", "top_read_units"):
        if units is not None and col in atlas.features.columns:
            try:
                named = np.concatenate(
                    [np.zeros(0, np.int64)] + [_unit_numbers(top) for top in atlas.features[col]]
                )
            except (TypeError, ValueError):
                named = np.full(1, -1)  # not lists of unit numbers
            if named.size and not 0 <= named.min() <= named.max() < len(units):
                raise AtlasFileError(
                    f"`{col}` of features.parquet in '{path}' must list units of units.parquet "
                    f"(0 to {len(units) - 1}); {fix}."
                )
    if s.get("n_modules", n) != n:
        raise AtlasFileError(
            f"'{path / ATLAS_JSON}' says n_modules {s['n_modules']!r}, but modules.parquet "
            f"has {n}; {fix}."
        )
    if "verdict" not in s or "significant" not in modules.columns:
        return
    again = Atlas(atlas.units, atlas.features, modules.copy(), dict(s))
    decide(again)
    differ = [k for k in _VERDICT_KEYS if k in s and s[k] != again.summary[k]]
    if differ:
        wrong = ", ".join(f"{k} {s[k]!r}" for k in differ)
        right = ", ".join(repr(again.summary[k]) for k in differ)
        raise AtlasFileError(
            f"'{path / ATLAS_JSON}' says {wrong}, but its tables give {right}; {fix}."
        )


def _check_layers(units: pd.DataFrame, layers: list[str] | None, path: Path, fix: str) -> None:
    """Each layer's units numbered ``0, 1, ...`` in order within it, and (when
    ``atlas.json`` lists them) only layers the atlas read: a unit's ``layer`` and
    ``index`` are what the report and the search name it by (``act2:17``)."""
    for layer, index in units.groupby("layer", sort=False)["index"]:
        if layers is not None and layer not in layers:
            raise AtlasFileError(
                f"units.parquet in '{path}' names the layer {layer!r}, not one of the atlas's "
                f"layers {layers}; {fix}."
            )
        if index.tolist() != list(range(len(index))):
            raise AtlasFileError(
                f"units.parquet in '{path}' numbers the units of layer {layer!r} "
                f"{index.tolist()[:5]}..., not 0, 1, 2, ... in order; {fix}."
            )


#: ``atlas.json``'s verdict and the counts it rests on (set by ``decide``).
_VERDICT_KEYS = (
    "verdict",
    "significant",
    "n_modules",
    "n_significant_modules",
    "n_sae_only_modules",
)
