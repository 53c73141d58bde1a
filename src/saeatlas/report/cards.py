"""One row and one card per module: units by layer, top features and examples, and the
module's significance, stability, selectivity and ablation figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..structure.inference.outcome import ABLATION_ALPHA, ablation_q
from .data import ReportData
from .plots import layer_names
from .text import fmt, fmt_p, fmt_z, is_missing, significance_word, summary_alpha

#: Units listed per layer on a card (the rest are counted).
UNITS_PER_LAYER = 24
#: Features and examples listed per card.
TOP_FEATURES, TOP_EXAMPLES = 8, 6
#: The module list's optional columns and their headers, in order.
TABLE_COLUMNS = {
    "z": "z",
    "p": "p",
    "significant": "significant",
    "stability": "stability",
    "label": "preferred label",
    "ablation": "ablation effect",
}


@dataclass(frozen=True)
class Badge:
    text: str
    tone: str
    """``good``, ``bad`` or ``warn`` (a CSS class)."""


@dataclass(frozen=True)
class ModuleCard:
    module: int
    colour: str
    n_units: int
    n_features: int
    layers: str
    badges: list[Badge]
    stats: list[tuple[str, str]]
    """(label, value) rows: significance per null, stability, selectivity, ablation."""
    units_by_layer: list[tuple[str, list[tuple[int, str]], int]]
    """(layer, [(unit, name), ...], how many more)."""
    top_features: list[tuple[int, str]]
    """(feature id, short description)."""
    examples: list[list]
    """[rank, row, activation, description]."""
    table: dict[str, str] = field(default_factory=dict)
    """The module list's cells."""


def module_cards(data: ReportData, module_examples: dict[int, list[list]]) -> list[ModuleCard]:
    m = data.atlas.modules
    units = data.atlas.units
    features = data.atlas.features
    order = layer_names(data)
    nulls = [c[2:] for c in m.columns if c.startswith("z_")]
    rank_col = "attribution" if "attribution" in features else "density"
    # each table split by module once: a filter per module read every unit for each of
    # them (38 s of a 2,000-module, 50,000-unit report)
    units = units.assign(layer_name=units["layer"].astype(str))
    unit_groups = dict(tuple(units.groupby("module", sort=False)))
    feature_groups = dict(tuple(features.groupby("module", sort=False)))
    cards = []
    for r in m.to_dict("records"):
        mid = int(r["module"])
        members = unit_groups.get(mid, units.iloc[:0])
        if "membership" in members:
            members = members.sort_values("membership", ascending=False)
        ids = members.index.to_numpy()
        layer_of = members["layer_name"].to_numpy(dtype=object)
        by_layer = []
        for layer in order:
            sub = ids[layer_of == layer]
            if not sub.size:
                continue
            shown = [(int(u), data.unit_names[int(u)]) for u in sub[:UNITS_PER_LAYER]]
            by_layer.append((layer, shown, max(0, sub.size - UNITS_PER_LAYER)))
        feats = feature_groups.get(mid, features.iloc[:0])
        if rank_col in feats:
            feats = feats.sort_values(rank_col, ascending=False)
        top = [
            (int(f.feature), f"density {fmt(getattr(f, 'density', None))}")
            for f in feats.head(TOP_FEATURES).itertuples(index=False)
        ]
        cards.append(
            ModuleCard(
                module=mid,
                colour=data.colour(mid),
                n_units=int(r["n_units"]),
                n_features=int(r["n_features"]),
                layers=", ".join(str(x) for x in _list(r.get("layers"))),
                badges=_badges(r, data.has_ablation, summary_alpha(data.summary)),
                stats=_stats(r, nulls),
                units_by_layer=by_layer,
                top_features=top,
                examples=module_examples.get(mid, [])[:TOP_EXAMPLES],
                table=_table_cells(r),
            )
        )
    return cards


def _list(x: Any) -> list:
    if x is None or (not isinstance(x, (list, tuple, np.ndarray, pd.Series)) and is_missing(x)):
        return []
    return list(x)


def _badges(r: dict[str, Any], has_ablation: bool, alpha: float | None) -> list[Badge]:
    out = []
    if "significant" in r:
        word = significance_word(r["significant"], r.get("p"), alpha)
        out.append(Badge(word, "good" if r["significant"] else "bad"))
    verdict = r.get("stability_verdict")
    if isinstance(verdict, str) and verdict:
        out.append(Badge(verdict, {"stable": "good", "dissolved": "bad"}.get(verdict, "warn")))
    if has_ablation and not is_missing(ablation_q(r)):
        causal = float(ablation_q(r)) <= ABLATION_ALPHA
        out.append(
            Badge(
                "ablation > random" if causal else "ablation ≈ random", "good" if causal else "warn"
            )
        )
    return out


def _stats(r: dict[str, Any], nulls: list[str]) -> list[tuple[str, str]]:
    rows = []
    # the module's p is Benjamini-Hochberg-adjusted over the modules and the largest over
    # the nulls; each null's own p is not adjusted: shown unnamed side by side, the two
    # read as one figure that disagreed with itself
    if "z" in r:
        strictest = f"z {fmt_z(r['z'])}, p {fmt_p(r.get('p'))} (adjusted for the modules tested)"
        rows.append(("significance (strictest)", strictest))
    for n in nulls:
        own = f"z {fmt_z(r.get('z_' + n))}, p {fmt_p(r.get('p_' + n))} (unadjusted)"
        rows.append((f"  vs {n} null", own))
    if "modularity" in r:
        rows.append(("modularity term", fmt(r["modularity"], ".3f")))
    if "stability" in r:
        # the ensemble's reproducibility; atlases before the ensemble held a bootstrap
        # Jaccard with its verdict (the card showed "1.00 (–)" for the ensemble's)
        verdict = r.get("stability_verdict")
        old = isinstance(verdict, str) and verdict
        rows.append(
            (
                "stability",
                f"{fmt(r['stability'], '.2f')} "
                + (
                    f"(best-match Jaccard over row resamples: {verdict})"
                    if old
                    else "of the ensemble's members recover it (Jaccard ≥ 0.5)"
                ),
            )
        )
    if "selectivity" in r:
        rows.append(
            (
                "label selectivity",
                f"{fmt(r['selectivity'], '.2f')}, prefers {label_text(r.get('preferred_label'))} "
                f"(p {fmt_p(r.get('selectivity_p'))})",
            )
        )
    if "ablation_effect" in r:
        rows.append(
            (
                "ablation: loss increase",
                f"{fmt(r['ablation_effect'])} vs random sets {fmt(r.get('ablation_random_mean'))}"
                f" (z {fmt_z(r.get('ablation_z'))}, p {fmt_p(r.get('ablation_p'))}"
                + (
                    f", adjusted over the modules {fmt_p(r['ablation_q'])}"
                    if "ablation_q" in r
                    else ""
                )
                + (
                    f"; {int(r['ablation_draws'])} random sets)"
                    if not is_missing(r.get("ablation_draws"))
                    else ")"
                ),
            )
        )
    return rows


def label_text(label: Any) -> str:
    """A label class as the page shows it: '–' for none (None, NaN), and the empty
    string, a class of its own, as "" (it read as no preferred label)."""
    if label is None or (isinstance(label, float) and label != label):
        return "–"
    return '""' if label == "" else str(label)


def _table_cells(r: dict[str, Any]) -> dict[str, str]:
    cells = {
        "z": fmt(r.get("z"), ".1f"),
        "p": fmt_p(r.get("p")),
        "significant": "yes" if r.get("significant") else "no",
    }
    if "stability" in r:
        cells["stability"] = (
            f"{fmt(r['stability'], '.2f')} {r.get('stability_verdict') or ''}".strip()
        )
    if "preferred_label" in r:
        cells["label"] = label_text(r.get("preferred_label"))
    if "ablation_effect" in r:
        q = "q" if "ablation_q" in r else "p"  # atlases before the adjustment hold only p
        cells["ablation"] = f"{fmt(r['ablation_effect'])} ({q} {fmt_p(ablation_q(r))})"
    return cells
