"""What an Atlas directory holds (:mod:`.atlas`): its files, the kinds of the entries of
``atlas.json``, and the checks :meth:`.atlas.Atlas.load` makes of ``atlas.json``,
so that an atlas edited by hand, or put together from two analyses, is refused by name
rather than shown under a headline its tables contradict. A change to the format
changes this file (the tables' columns and their agreement with ``atlas.json``:
:mod:`.atlas_tables`); reading and writing it is :mod:`.atlas`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import AtlasError

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
    """Whether ``p`` is a file a report writes into ``figures/`` (or its temporary file):
    a folder of that name is not (``figures/feature_map.png/`` holding a file of the
    user's was deleted with the figures the next report replaced)."""
    named = p.name in FIGURE_FILES or p.name.startswith(".tmp-")
    return named and (p.is_symlink() or not p.is_dir())


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
    "n_causal_modules": (int,),
    "significant": (bool,),
    **dict.fromkeys(("verdict", "message"), (str,)),
    **dict.fromkeys(
        ("modularity", "modularity_of_modules", "z", "p", "null_mean", "null_std"),
        (int, float, _NONE),
    ),
    **dict.fromkeys(("mean_l0", "fvu"), (int, float, _NONE)),
    **dict.fromkeys(("n_rows_encoded", "store_skipped_rows", "n_repeated_rows"), (int, _NONE)),
    **dict.fromkeys(("store", "store_fingerprint"), (str, _NONE)),
    # a run's model SPEC and sweep directory, and the rows' label column, which the report
    # shows and reads (a number as `sweep` ended it in pathlib's TypeError)
    **dict.fromkeys(("model", "sweep", "label_column"), (str, _NONE)),
    "partition_significant": (bool, _NONE),
    **dict.fromkeys(("module_kind", "modules_from", "strictest_null", "method"), (str, _NONE)),
    "format_version": (int,),
    "nulls": (list,),
    "layers": (list, _NONE),
    "store_moments": (list, _NONE),
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
#: A scale of the ensemble or of a correlation view (the report's Stability line).
_LEVEL = {
    "scale": _NUMBER,
    **dict.fromkeys(("chosen", "submodules"), (bool,)),
    **dict.fromkeys(("n_reproducible_modules", "n_consensus_modules"), (int,)),
    "reproducibility": (list,),
    "agreement": _NUMBER,
}
#: Types inside the objects of ``atlas.json`` that the report and other tools read, by
#: path: ``a.b`` the object ``b`` in ``a``, ``a[]`` every item of the list ``a``, ``a{}``
#: every value of the object ``a``; an object's keys, or one type for every item. Keys
#: that are absent are not checked (older atlases lack some), except :data:`NESTED_KEYS`.
NESTED_TYPES: dict[str, dict[str, tuple[type, ...]] | tuple[type, ...]] = {
    "nulls[]": _NULL_TEST,
    # the significance level the partitions and modules were tested at (edited to 0.9, it
    # let p-values of 0.86 pass the checks of the verdict)
    "config": {"alpha": _NUMBER},
    "sae_modules": {
        **dict.fromkeys(("n_modules", "n_significant_modules", "n_units"), (int,)),
        "nulls": (list,),
    },
    "sae_modules.nulls[]": _NULL_TEST,
    "sae": {
        **dict.fromkeys(("path", "architecture", "fingerprint", "rows_digest"), (str, _NONE)),
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
    "ensemble.levels[]": _LEVEL,
    "ensemble.levels[].reproducibility[]": (int, float),
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
        **dict.fromkeys(("n_random", "stop_after"), _COUNTS),
        **dict.fromkeys(("clean_loss", "alpha"), _NUMBER),
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
    # the views by name (atlases before them held one view's figures here); a view that is
    # null (or of another name and not an object) ended the report in an AttributeError
    "cross_check{}": (dict,),
    **{
        path: spec
        for view in ("raw", "clean")
        for path, spec in {
            f"cross_check.{view}": {
                "partition_significant": (bool,),
                "n_members": (int,),
                **dict.fromkeys(("scale", "agreement"), _NUMBER),
                "levels": (list,),
            },
            f"cross_check.{view}.levels[]": _LEVEL,
            f"cross_check.{view}.levels[].reproducibility[]": (int, float),
        }.items()
    },
    "layers[]": (str,),
}
#: Keys the objects at these paths must have (read without a default).
NESTED_KEYS: dict[str, tuple[str, ...]] = {
    "nulls[]": ("null", "z", "p"),
    "sae_modules.nulls[]": ("null", "z", "p"),
    "sweep_modules": ("over", "values", "neighbour_ari", "atlas_ari"),
}
#: The range of the numbers of ``atlas.json`` by their key, in any object (a count of -1,
#: or a p of 3, edited by hand was shown as it stood: "Rows analysed -1", "k -1").
_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(
        (
            *("n_modules", "n_significant_modules", "n_sae_only_modules", "n_units"),
            "n_causal_modules",
            *("n_rows_encoded", "store_skipped_rows", "d_in", "d_sae", "k", "n_random"),
            "n_repeated_rows",
            "stop_after",
            *("n_rows", "n_edges", "n_tests", "window", "n_saes", "n_bootstrap", "n_members"),
            *("n_draws", "n_seeds", "n_stable_modules", "n_dissolved_modules"),
            *("n_reproducible_modules", "n_consensus_modules", "null_std", "fvu", "mean_l0"),
        ),
        (0, math.inf),
    ),
    **dict.fromkeys(("p", "p_empirical", "edge_alpha", "reproducibility", "alpha"), (0, 1)),
    # a modularity (resolution 1, of a graph of positive weights) lies in [-1/2, 1], and
    # so does a mean of them; an adjusted Rand index (`agreement`: a mean of them) at most
    # 1: one edited to 7 was shown as it stood, and an `agreement` of 5 passed the
    # members' agreement that modules need to count as reproducible
    **dict.fromkeys(("modularity", "modularity_of_modules", "null_mean"), (-1, 1)),
    **dict.fromkeys(
        ("agreement", "unit_ari", "bootstrap_ari", "seed_unit_ari", "neighbour_ari", "atlas_ari"),
        (-1, 1),
    ),
}


def _wrong_type(value: Any, types: tuple[type, ...]) -> bool:
    return not isinstance(value, types) or (isinstance(value, bool) and bool not in types)


def _check_range(key: str, name: str, value: Any, meta: Path, fix: str) -> None:
    """Refuse a number outside the range :data:`_RANGES` gives its ``key``."""
    low, high = _RANGES.get(key, (-math.inf, math.inf))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
        want = "0 or more" if high == math.inf else f"from {low} to {high}"
        raise AtlasFileError(f"`{name}` in '{meta}' must be {want}, got {value!r}; {fix}.")


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
                _check_range(path.split(".")[-1].rstrip("[]{}"), name, value, meta, fix)
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
                _check_range(key, f"{name}.{key}", value.get(key), meta, fix)


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
        _check_range(key, key, value, meta, fix)
    version = summary.get("format_version", FORMAT_VERSION)
    if not 1 <= version <= FORMAT_VERSION:
        raise AtlasFileError(
            f"'{meta}' has format_version {version}; this saeatlas reads 1 to "
            f"{FORMAT_VERSION}. Upgrade saeatlas, or {fix}."
        )
    _check_nested(summary, meta, fix)
    # at most d_sae latents are active on a row: a `k` of 99 of 16 latents was shown as the
    # SAE's ("d_sae 16, k 99"), and so was a mean L0 of a billion (k is the TopK family's
    # alone: other SAEs keep the default, which may be above their d_sae)
    from ..sae.architectures import REGISTRY

    sae = summary.get("sae") if isinstance(summary.get("sae"), dict) else {}
    d_sae, arch = sae.get("d_sae"), REGISTRY.get(str(sae.get("architecture")))
    k = sae.get("k") if arch is not None and arch.topk_family else None
    for name, value in (("sae.k", k), ("mean_l0", summary.get("mean_l0"))):
        if isinstance(d_sae, int) and isinstance(value, (int, float)) and value > d_sae:
            raise AtlasFileError(
                f"`{name}` in '{meta}' is {value!r}, more than the SAE's {d_sae} latents "
                f"(`sae.d_sae`); {fix}."
            )
    # read without a default beside a tested p (a KeyError in the report's Modularity line)
    missing = [k for k in ("z", "null_mean", "null_std") if k not in summary]
    if summary.get("p") is not None and missing:
        raise AtlasFileError(
            f"'{meta}' has a `p` without {', '.join(f'`{k}`' for k in missing)} (null for a "
            f"figure not measured); {fix}."
        )
    if "verdict" in summary and summary["verdict"] not in VERDICTS:
        raise AtlasFileError(
            f"`verdict` in '{meta}' is {summary['verdict']!r}, not one of {list(VERDICTS)}; {fix}."
        )
    return summary
