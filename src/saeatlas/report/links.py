"""How strongly modules are linked to one another: the edges of the report's module graph.

The atlas stores no module-to-module co-occurrence directly, so the report uses
what it does store, in this order, and says which on the page:

1. ``flows.parquet`` (multi-layer atlases): ``coactivation`` is the Pearson
   correlation across rows between module A's activity in layer ``l`` and
   module B's in layer ``l + 1`` (see :func:`saeatlas.structure.describe.layers.module_flows`).
   A link between two different modules is the mean of that correlation over
   every layer pair and both directions; it can be negative (modules that
   take turns). ``weight_flow`` is averaged the same way and shown beside it.
2. ``examples.parquet`` (one layer): the Jaccard overlap of two modules' sets
   of top-activating rows, a coarse sign that they fire on the same inputs.

Both are co-activation statistics, not causal links.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..structure.atlas import Atlas

#: Links weaker than this (in absolute value) are not drawn.
MIN_LINK = 0.1


@dataclass(frozen=True)
class ModuleLinks:
    edges: pd.DataFrame
    """``source``, ``target`` (source < target), ``weight``, ``detail`` (hover text)."""
    measure: str
    """What ``weight`` is, in a sentence for the page."""
    kind: str
    """``'flows'``, ``'examples'`` or ``'none'``."""
    self_links: dict[int, float]
    """Per module, its own activity's correlation across consecutive layers (flows only)."""


def module_links(atlas: Atlas, min_weight: float = MIN_LINK) -> ModuleLinks:
    """The strongest links between distinct modules from what the atlas stores."""
    flows = atlas.flows
    if not flows.empty and {"source_module", "target_module", "coactivation"} <= set(flows):
        return _from_flows(flows, min_weight)
    examples = atlas.examples
    if not examples.empty and {"kind", "id", "row"} <= set(examples):
        return _from_examples(examples, min_weight)
    return ModuleLinks(
        pd.DataFrame(columns=["source", "target", "weight", "detail"]),
        "The atlas stores neither flows nor top examples, so no links between modules are drawn.",
        "none",
        {},
    )


def _from_flows(flows: pd.DataFrame, min_weight: float) -> ModuleLinks:
    f = flows.copy()
    a, b = f["source_module"].to_numpy(), f["target_module"].to_numpy()
    f["source"], f["target"] = np.minimum(a, b), np.maximum(a, b)
    if "weight_flow" not in f:
        f["weight_flow"] = np.nan
    same = f["source"] == f["target"]
    self_links = {
        int(m): float(v)
        for m, v in f[same].groupby("source")["coactivation"].mean().items()
        if np.isfinite(v)
    }
    pairs = (
        f[~same]
        .groupby(["source", "target"])
        .agg(
            weight=("coactivation", "mean"),
            weight_flow=("weight_flow", "mean"),
            n=("coactivation", "size"),
        )
        .reset_index()
    )
    pairs = pairs[np.isfinite(pairs["weight"]) & (pairs["weight"].abs() >= min_weight)]
    pairs["detail"] = [
        f"module {s} – module {t}: co-activation r {w:+.2f} across consecutive layers "
        f"(mean of {n} layer pairs); weight flow {wf:.2f}"
        for s, t, w, wf, n in zip(
            pairs["source"], pairs["target"], pairs["weight"], pairs["weight_flow"], pairs["n"]
        )
    ]
    measure = (
        "Edges: Pearson correlation across rows between one module's activity in a layer "
        "and the other's in the next layer (flows.parquet `coactivation`), averaged over "
        f"layer pairs and both directions; drawn where |r| ≥ {min_weight:g} (solid: "
        "positive, dashed: negative). A co-activation statistic, not a causal link."
    )
    edges = pairs[["source", "target", "weight", "detail"]].reset_index(drop=True)
    return ModuleLinks(edges, measure, "flows", self_links)


def _from_examples(examples: pd.DataFrame, min_weight: float) -> ModuleLinks:
    mod = examples[examples["kind"] == "module"]
    rows = {int(m): set(g["row"].tolist()) for m, g in mod.groupby("id")}
    ids = sorted(rows)
    out = []
    for i, s in enumerate(ids):
        for t in ids[i + 1 :]:
            inter = len(rows[s] & rows[t])
            w = inter / max(len(rows[s] | rows[t]), 1)
            if w >= min_weight:
                out.append(
                    (s, t, w, f"module {s} – module {t}: {inter} shared top rows (Jaccard {w:.2f})")
                )
    measure = (
        "Edges: Jaccard overlap of two modules' top-activating rows (examples.parquet), "
        f"drawn where it is at least {min_weight:g}. A coarse co-activation statistic "
        "(the atlas stores no flows between consecutive layers), not a causal link."
    )
    edges = pd.DataFrame(out, columns=["source", "target", "weight", "detail"])
    return ModuleLinks(edges, measure, "examples", {})
