"""One table of an atlas's modules: what ``saeatlas run`` and ``saeatlas demo`` print."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..structure import Atlas
from ..structure.atlas import check_atlas_argument


def module_summary(atlas: Atlas) -> pd.DataFrame:
    """One row per module: ``module``, ``units_per_layer`` (``{layer: n}`` in layer
    order), ``n_units``, ``n_features``, ``z``, ``p``, ``significant``, ``stability``,
    ``ablation_effect``, ``ablation_p``, ``ablation_q``, ``preferred_label``, ``selectivity``; NaN or
    None where the atlas has no such figure (no stability runs, no ablation, no labels)."""
    check_atlas_argument(atlas)  # its directory ended in an AttributeError
    m = atlas.modules
    layers = list(atlas.summary.get("layers", []))
    counts = (
        atlas.units[atlas.units["module"] >= 0].groupby(["module", "layer"]).size()
        if len(atlas.units)
        else pd.Series(dtype=int)
    )

    def per_layer(module: int) -> dict[str, int]:
        return {l: int(counts.get((module, l), 0)) for l in layers if counts.get((module, l), 0)}

    def column(name: str, default: object = np.nan) -> list:
        return list(m[name]) if name in m.columns else [default] * len(m)

    return pd.DataFrame(
        {
            "module": column("module"),
            "units_per_layer": [per_layer(int(i)) for i in column("module")],
            "n_units": column("n_units"),
            "n_features": column("n_features"),
            "z": column("z"),
            "p": column("p"),
            "significant": column("significant", False),
            "stability": column("stability"),
            "ablation_effect": column("ablation_effect"),
            "ablation_p": column("ablation_p"),
            "ablation_q": column("ablation_q"),
            "preferred_label": column("preferred_label", None),
            "selectivity": column("selectivity"),
        }
    )
