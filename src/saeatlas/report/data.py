"""Everything a report needs, loaded and checked: the atlas, its sweep and training curves.

Only the Atlas directory is required. The sweep (``--sweep``, the ``sweep`` path
in ``atlas.json``, or a ``sweep/`` directory beside the atlas) and the SAE's
``metrics.jsonl`` are optional: when they are missing, :class:`ReportData`
carries a sentence saying why, and the page prints it in their place.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..structure.atlas import Atlas, AtlasFileError, atlas_path
from ..structure.atlas_columns import check_required
from ..structure.atlas_tables import REANALYSE
from ..sweep.pareto import check_recorded
from ..sweep.sweep import SWEEP_JSON, UNSTABLE, SweepPoint, member_dir
from ..train.trainer import METRICS
from .sae_facts import recorded_path, sae_recorded, sae_unread
from .store_facts import store_facts, unit_names

log = logging.getLogger(__name__)

#: Colour of features and units outside every module.
NO_MODULE_COLOUR = "#c4c4c4"
#: Seed of the feature-map sample, so a report is the same every time it is written.
SAMPLE_SEED = 0


@dataclass(frozen=True)
class SweepInfo:
    """A sparsity sweep (``sweep.json``) and where the atlas's SAE sits in it."""

    path: Path
    over: str
    rule: str
    heldout_rows: int
    points: list[SweepPoint]
    recommended: int
    """Index into ``points`` of the sweep's recommendation."""
    atlas_point: int | None
    """Index into ``points`` of the atlas's SAE (matched by path), None when it is not a member."""
    unstable_below: float = UNSTABLE
    knee_inside: bool = True
    """Whether the recommendation lies inside the swept range (a sweep from before this
    was recorded counts as inside)."""
    extended: tuple[float, ...] = ()
    """Values the sweep added past an end of its range."""
    note: str | None = None
    """Why the recommendation is still at an end of the range."""

    @property
    def chosen(self) -> SweepPoint:
        return self.points[self.recommended]


@dataclass(frozen=True)
class MapSample:
    """Which features the feature map draws (all of them, or every module member plus a sample)."""

    rows: np.ndarray
    """Row positions into ``atlas.features`` of the drawn features."""
    n_features: int
    n_members: int
    """Module members, always drawn."""
    n_others: int
    """Features outside every module."""
    n_others_drawn: int
    max_points: int

    @property
    def sampled(self) -> bool:
        return self.n_others_drawn < self.n_others


@dataclass(frozen=True)
class ReportData:
    """An atlas with what surrounds it, ready for plotting."""

    atlas_dir: Path
    atlas: Atlas
    ablation: pd.DataFrame
    """Module x label ablation table (empty without a causal check)."""
    sweep: SweepInfo | None
    sweep_note: str
    """Where the sweep came from, or why there is none."""
    training: pd.DataFrame | None
    """The SAE's ``metrics.jsonl`` records, one row per logged step."""
    training_note: str
    model: str | None
    """The model's name (atlas.json, else the store's provenance), when known."""
    store_unread: str | None
    """Why the manifest of the store atlas.json names was not read (not there, or no
    longer the atlas's store): the model's name and per-head unit names are then unknown."""
    colours: list[str]
    """One colour per module (index = module id)."""
    unit_names: list[str]
    """``layer:index`` of every unit, in ``atlas.units`` order."""
    map_sample: MapSample

    @property
    def summary(self) -> dict[str, Any]:
        return self.atlas.summary

    @property
    def n_modules(self) -> int:
        return len(self.atlas.modules)

    @property
    def has_ablation(self) -> bool:
        return "ablation_effect" in self.atlas.modules.columns and self.n_modules > 0

    @property
    def has_stability(self) -> bool:
        return (
            "stability" in self.atlas.modules.columns
            or bool(self.summary.get("stability"))
            or bool(self.summary.get("ensemble"))
        )

    def colour(self, module: int) -> str:
        return self.colours[module] if 0 <= module < len(self.colours) else NO_MODULE_COLOUR


def check_atlas_dir(atlas_dir: str | Path) -> Path:
    """``atlas_dir`` as a path, when it is a directory (a report reads it and writes into
    it: a file given there was refused as an output to choose again)."""
    atlas_dir = atlas_path(atlas_dir)
    if not atlas_dir.is_dir():
        raise AtlasFileError(
            f"'{atlas_dir}' is not a directory; give the atlas directory that "
            "`saeatlas analyze --out` wrote."
        )
    return atlas_dir


def load_report_data(
    atlas_dir: str | Path,
    *,
    sweep_dir: str | Path | None = None,
    max_map_points: int = 20_000,
) -> ReportData:
    """Read the Atlas directory and, when found, its sweep and training curves."""
    # "5" (from Python) ended in a TypeError, and 1.5 was taken
    whole = isinstance(max_map_points, numbers.Integral) and not isinstance(max_map_points, bool)
    if not whole or max_map_points < 1:
        raise ConfigError(
            f"--max-map-points (`max_map_points`) must be at least 1, got {max_map_points!r}; "
            "give a whole number of features."
        )
    if not isinstance(sweep_dir, (str, os.PathLike, type(None))):  # pathlib's TypeError
        raise ConfigError(
            f"--sweep (`sweep_dir`) must be the path of a sweep directory, got {sweep_dir!r:.80}."
        )
    atlas_dir = check_atlas_dir(atlas_dir)
    atlas = Atlas.load(atlas_dir)
    check_required(atlas, atlas_dir, REANALYSE, report=True)  # it shows every table
    sae_gone = sae_unread(atlas.summary, atlas_dir.parent)
    sweep, sweep_note = _find_sweep(atlas_dir, atlas.summary, sweep_dir, sae_gone)
    if sweep is not None and sae_gone:
        sweep_note += f" The atlas's SAE is not marked in it: {sae_gone}."
    training, training_note = _load_training(atlas_dir, atlas.summary, sae_gone)
    facts = store_facts(atlas.summary)
    ablation = getattr(atlas, "ablation", None)
    if ablation is None:
        ablation = pd.DataFrame()
    return ReportData(
        atlas_dir=atlas_dir,
        atlas=atlas,
        ablation=ablation,
        sweep=sweep,
        sweep_note=sweep_note,
        training=training,
        training_note=training_note,
        model=facts.model,
        store_unread=facts.unread,
        colours=module_colours(len(atlas.modules)),
        unit_names=unit_names(atlas, facts.shapes),
        map_sample=map_sample(atlas.features, max_map_points),
    )


def module_colours(n_modules: int) -> list[str]:
    """Distinct colours for ``n_modules`` modules (Plotly's Dark24 then Light24, cycled)."""
    from plotly.colors import qualitative

    palette = list(qualitative.Dark24) + list(qualitative.Light24)
    return [palette[m % len(palette)] for m in range(n_modules)]


def map_sample(features: pd.DataFrame, max_points: int, seed: int = SAMPLE_SEED) -> MapSample:
    """Every feature when there are at most ``max_points``; otherwise every module member
    and a seeded uniform sample of the other features, ``max_points`` in all (or just the
    members, when they alone exceed it)."""
    module = features["module"].to_numpy()
    members = np.flatnonzero(module >= 0)
    others = np.flatnonzero(module < 0)
    room = max(0, max_points - len(members))
    if len(others) > room:
        rng = np.random.default_rng(seed)
        drawn = np.sort(rng.choice(others, room, replace=False))
    else:
        drawn = others
    return MapSample(
        rows=np.sort(np.concatenate([members, drawn])),
        n_features=len(features),
        n_members=len(members),
        n_others=len(others),
        n_others_drawn=len(drawn),
        max_points=max_points,
    )


def _find_sweep(
    atlas_dir: Path, summary: dict[str, Any], sweep_dir: str | Path | None, sae_gone: str | None
) -> tuple[SweepInfo | None, str]:
    """The sweep given, or the one ``atlas.json`` names, or ``sweep/`` beside the atlas
    (a sweep of other layers or other rows than the atlas's SAE is not shown). The atlas's
    SAE is marked in it only while the SAE at its path is still the atlas's (``sae_gone``
    None)."""
    sae_path = None if sae_gone else sae_recorded(summary).get("path")
    if sweep_dir is not None:
        path = Path(sweep_dir)
        if not (path / SWEEP_JSON).is_file():
            raise ConfigError(
                f"--sweep '{path}' holds no {SWEEP_JSON}; give the directory that "
                "`saeatlas sweep --out` wrote, or leave --sweep out."
            )
        sweep = _read_sweep(path, sae_path, strict=True)
        other = _not_the_atlas(sweep, summary)
        if other:
            raise ConfigError(
                f"--sweep {other}; give the sweep the SAE came from, or leave --sweep out."
            )
        return sweep, f"Sweep from '{path}'."
    named = summary.get("sweep")
    candidates = []
    if named:
        candidates.append((recorded_path(named, atlas_dir), "named in atlas.json"))
    candidates.append((atlas_dir.parent / "sweep", "found beside the atlas"))
    for path, how in candidates:
        if (path / SWEEP_JSON).is_file():
            sweep = _read_sweep(path, sae_path, strict=False)
            if sweep is None:
                return None, (
                    f"The sweep at '{path}' ({how}) is unreadable; rerun `saeatlas sweep` "
                    "or pass another --sweep."
                )
            other = _not_the_atlas(sweep, summary)
            if other:
                return None, f"No sparsity sweep shown: the one {how} {other}."
            return sweep, f"Sweep from '{path}' ({how})."
    if named:
        return None, (
            f"No sparsity sweep: atlas.json names '{named}', which holds no {SWEEP_JSON}. "
            "Pass --sweep DIR to show one."
        )
    if summary.get("sweep_modules"):  # analysed with its members, not "chosen by hand"
        return None, "No sparsity sweep shown: the atlas compares its modules across a " + (
            "sweep's members (below), but records no sweep directory; pass --sweep DIR."
        )
    return None, (
        "No sparsity sweep found (none given with --sweep, none named in atlas.json, "
        f"no '{atlas_dir.parent / 'sweep'}'): the sparsity was chosen by hand. Run "
        "`saeatlas sweep` to choose it from the L0-FVU frontier."
    )


def _read_sweep(path: Path, sae_path: str | None, *, strict: bool) -> SweepInfo | None:
    try:
        raw = json.loads((path / SWEEP_JSON).read_text())
        points = [SweepPoint(**p) for p in raw["points"]]
        over, recommended, heldout = raw["over"], raw["recommended"], raw["heldout_rows"]
        # each was converted: true was point 1, 1.5 point 1, -3 held-out rows shown so
        if not (isinstance(over, str) and _whole(recommended) and _whole(heldout) and heldout >= 0):
            raise ValueError(
                f"`over` {over!r}, `recommended` {recommended!r} and `heldout_rows` {heldout!r} "
                "must be a setting's name, a point's index and a count of rows"
            )
        info = SweepInfo(
            path=path,
            over=over,
            rule=str(raw["rule"]),
            heldout_rows=heldout,
            points=points,
            recommended=recommended,
            atlas_point=_member(points, sae_path, path),
            knee_inside=bool(raw.get("knee_inside", True)),
            extended=tuple(float(v) for v in raw.get("extended", ())),
            note=raw.get("note"),
        )
        if not 0 <= info.recommended < len(points):
            raise ValueError(f"recommended index {info.recommended} outside the points")
        check_recorded(
            [p.value for p in points],
            [p.l0 for p in points],
            [p.fvu for p in points],
            [p.on_front for p in points],
            info.recommended,
            info.rule,
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        if strict:
            raise ConfigError(
                f"The sweep at '{path}' is unreadable ({e}); rerun `saeatlas sweep`."
            ) from e
        log.warning("Ignoring the unreadable sweep at '%s': %s", path, e)
        return None
    return info


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _not_the_atlas(sweep: SweepInfo, summary: dict[str, Any]) -> str | None:
    """Why ``sweep`` is not the atlas's (its SAEs read other layers, or were trained on
    other rows than the atlas's SAE: ``rows_digest``), or None. A sweep of another store
    cannot say why the atlas's sparsity was chosen."""
    if not sweep.points:
        return None
    cfg = member_dir(sweep.path, sweep.points[0].path) / "cfg.json"
    try:
        raw = json.loads(cfg.read_text())
        theirs = [l["name"] for l in raw.get("layers") or []]
        rows = (raw.get("metadata") or {}).get("rows_digest")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # a member's config is not needed to show the sweep
    mine = summary.get("layers") or []
    if theirs and mine and theirs != mine:
        return f"'{sweep.path}' was trained on the layers {theirs}, the atlas's SAE on {mine}"
    my_rows = sae_recorded(summary).get("rows_digest")
    if rows and my_rows and rows != my_rows:
        return (
            f"'{sweep.path}' was trained on other rows than the atlas's SAE (rows digest "
            f"{rows}, the SAE's {my_rows})"
        )
    return None


def _member(points: list[SweepPoint], sae_path: str | None, sweep_path: Path) -> int | None:
    """Which sweep point is the SAE at ``sae_path`` (same directory), if any."""
    if not sae_path:
        return None
    target = Path(sae_path).resolve()
    for i, p in enumerate(points):
        if member_dir(sweep_path, p.path).resolve() == target:
            return i
    return None


def _load_training(
    atlas_dir: Path, summary: dict[str, Any], sae_gone: str | None
) -> tuple[pd.DataFrame | None, str]:
    sae_path = sae_recorded(summary).get("path")
    if not sae_path:
        return None, (
            "No training curves: atlas.json records no SAE directory (the SAE was passed "
            "as an object)."
        )
    if sae_gone:
        return None, f"No training curves: {sae_gone}."
    metrics = recorded_path(sae_path, atlas_dir.parent) / METRICS
    if not metrics.is_file():
        return None, (
            f"No training curves: '{metrics}' is missing (the SAE was not trained by "
            "saeatlas, or its directory moved)."
        )
    try:
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        return None, f"No training curves: '{metrics}' is unreadable ({e})."
    if not records:
        return None, f"No training curves: '{metrics}' is empty."
    for i, r in enumerate(records, 1):  # a line of another kind ended the report in a TypeError
        if not isinstance(r, dict) or not all(_finite(r[c]) for c in _CURVES if c in r):
            return None, f"No training curves: record {i} of '{metrics}' is not one of numbers."
    if not any(c in r for r in records for c in _CURVES[2:]):  # a figure of no panels
        return None, f"No training curves: '{metrics}' records no fvu, l0 or dead_fraction."
    return pd.DataFrame.from_records(records), f"Training curves from '{metrics}'."


#: The fields of metrics.jsonl that the training curves draw (x axis first).
_CURVES = ("tokens", "step", "fvu", "l0", "dead_fraction")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
